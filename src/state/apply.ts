import { SmError, toSmError } from '../errors.js';
import type { ImageInfo } from '../images/index.js';
import type { ImageRef, ImageSources, ResolvedImage } from '../images/sources.js';
import type { LayerStore } from '../layers/store.js';
import type { Logger } from '../log.js';
import type { Operation, OperationHandle, Operations } from '../operations/operations.js';
import type { ServiceManager } from '../services/manager.js';
import { checkVersion, computeDrift, contentHash, planServices, type DesiredState, type Drift, type InstalledService, type ItemResult, type PlannedService } from './plan.js';
import type { DesiredStateStore, StoredApply } from './store.js';

export interface StateApplierDeps {
  services: ServiceManager;
  layers: LayerStore;
  sources: ImageSources;
  operations: Operations;
  store: DesiredStateStore;
  logger: Logger;
}

/** Operation kind and lock key of an apply: applies run one after another. */
export const APPLY_KIND = 'state.apply';

export interface StateView {
  desired: DesiredState | null;
  applied: { version: number; operationId: string; state: StoredApply['state']; finishedAt: number | null; items: ItemResult[]; error: StoredApply['error'] } | null;
  /** The last apply that succeeded, when the newest did not. */
  lastSucceeded: { version: number; operationId: string; finishedAt: number | null } | null;
  drift: Drift[];
}

/**
 * state.apply (SPEC 12), all or nothing. Its steps, in order (a crash test can stop smd at each
 * with SMD_CRASH_AT=state.apply:<step>):
 *  - `resolve`: every image that will be needed is resolved, checked, and the disk space of all
 *    of them checked at once (LIMIT); `fetch`: every blob made local and verified. A failure
 *    here changes nothing on the device.
 *  - `layers`: the state's layers; then per service `<id>-<step>` (the steps of services.install:
 *    `layers`, `prepare`, `start` for a fresh install, `stop-previous`, `layers`, `start` for an
 *    update), each health-gated. When one fails: `rollback` puts back every service already
 *    changed, and the operation fails naming the item.
 *  - `commit`: every change held (recorded: a crash from here on finishes the apply); the
 *    previous versions' files go; `remove`: the services the state does not list; `cleanup`:
 *    layer prune.
 * A crash before `commit` is rolled back at start, one after it finished (src/services/group.ts).
 */
export class StateApplier {
  constructor(private readonly deps: StateApplierDeps) {}

  /** CONFLICT now (before an operation starts) for a version the rule refuses. */
  apply(desired: DesiredState, force = false): Operation {
    const hash = contentHash(desired);
    const decision = checkVersion(this.deps.store.lastSucceeded(), desired.version, hash, force);
    return this.deps.operations.start({
      kind: APPLY_KIND,
      target: `v${desired.version}`,
      inputs: { version: desired.version, hash, force, services: desired.services.length, layers: desired.layers.length },
      lockKey: APPLY_KIND,
      work: async (op) => {
        // Again under the lock: an apply queued behind another sees what that one left.
        const now = checkVersion(this.deps.store.lastSucceeded(), desired.version, hash, force);
        if (decision === 'unchanged' && now === 'unchanged') return { version: desired.version, unchanged: true, items: this.unchangedItems(desired) };
        return this.run(op, desired, hash);
      },
    });
  }

  view(): StateView {
    const { store, layers } = this.deps;
    const latest = store.latest();
    const succeeded = latest?.state === 'succeeded' ? latest : store.lastSucceeded();
    return {
      desired: latest?.desired ?? null,
      applied: latest ? { version: latest.version, operationId: latest.operationId, state: latest.state, finishedAt: latest.finishedAt, items: latest.items, error: latest.error } : null,
      lastSucceeded: succeeded && succeeded !== latest ? { version: succeeded.version, operationId: succeeded.operationId, finishedAt: succeeded.finishedAt } : null,
      drift: computeDrift(latest?.desired ?? null, this.installed(), { digests: succeeded?.layerDigests ?? [], has: (d) => layers.has(d) }),
    };
  }

  /**
   * Start-up, after the services' reconciliation finished or undid interrupted groups: the rows
   * of interrupted applies say how they ended (committed → succeeded, else failed).
   */
  settleInterrupted(interrupted: Operation[]): string[] {
    const committed = new Set(interrupted.filter((o) => o.kind === APPLY_KIND && (o.inputs.group as { committed?: boolean } | undefined)?.committed === true).map((o) => o.id));
    return this.deps.store.settleInterrupted((id) => (committed.has(id) ? 'succeeded' : 'failed'));
  }

  private installed(): InstalledService[] {
    const { services } = this.deps;
    const attached = services.attachedTo(services.currentUsers());
    return services.list().map((s) => ({ id: s.id, version: s.version, state: s.state, attached: attached.has(s.id) }));
  }

  private unchangedItems(desired: DesiredState): ItemResult[] {
    return [
      ...desired.layers.map((l): ItemResult => ({ kind: 'layer', id: l.image, outcome: 'unchanged' })),
      ...desired.services.map((s): ItemResult => ({ kind: 'service', id: s.id, outcome: 'unchanged', from: s.version, to: s.version })),
    ];
  }

  private async run(op: OperationHandle, desired: DesiredState, hash: string): Promise<{ version: number; items: ItemResult[] }> {
    const { store, services, sources, layers, logger } = this.deps;
    const createdAt = this.deps.operations.get(op.id).createdAt;
    store.begin(op.id, desired, hash);
    const plan = planServices(desired.services, this.installed());
    const items = new Map<string, ItemResult>();
    const key = (kind: ItemResult['kind'], id: string) => `${kind}:${id}`;
    desired.layers.forEach((l) => items.set(key('layer', l.image), { kind: 'layer', id: l.image, outcome: 'unchanged' }));
    for (const p of plan) items.set(key('service', p.id), { kind: 'service', id: p.id, outcome: 'unchanged', from: p.from, to: p.to ?? undefined });
    const list = () => [...items.values()].map((i) => (i.to === undefined ? (({ to: _to, ...rest }) => rest)(i) : i));
    const fail = (k: string, err: SmError) => {
      const item = items.get(k)!;
      item.outcome = 'failed';
      item.error = err.message;
      return item;
    };
    const changes = plan.filter((p) => p.action === 'install' || p.action === 'update');
    const removals = plan.filter((p) => p.action === 'remove');
    const fetched: ImageInfo[] = [];
    const resolved: ResolvedImage[] = [];
    let committed = false;
    try {
      // 1. Everything resolved, checked and fetched: nothing on the device changes before this held.
      op.step('resolve', `${desired.layers.length} layers, ${changes.length} services to install or update`);
      const wanted: { key: string; ref: ImageRef }[] = [
        ...desired.layers.map((l) => ({ key: key('layer', l.image), ref: { image: l.image, digest: l.digest, size: l.size, signature: l.signature } })),
        ...changes.map((p) => {
          const s = desired.services.find((x) => x.id === p.id)!;
          return { key: key('service', p.id), ref: { image: s.image, digest: s.digest, size: s.size, signature: s.signature } };
        }),
      ];
      for (const w of wanted) {
        try {
          const r = await sources.resolve(w.ref);
          const isService = w.key.startsWith('service:');
          if (isService && r.info.config.entrypoint.length + r.info.config.cmd.length === 0) throw new SmError('INVALID_IMAGE', `${w.ref.image} has neither Entrypoint nor Cmd`);
          if (!isService) layers.checkCompatible(r.info);
          resolved.push(r);
        } catch (err) {
          const e = toSmError(err);
          fail(w.key, e);
          throw itemError(e, items.get(w.key)!, 'nothing was changed');
        }
      }
      await sources.ensureSpace(resolved);
      op.step('fetch');
      const total = resolved.reduce((n, r) => n + r.need.downloadBytes, 0);
      let before = 0;
      for (const [i, r] of resolved.entries()) {
        try {
          fetched.push(
            await sources.fetch(r, {
              onProgress: (done, all) => op.progress(total > 0 ? ((before + done) / total) * 20 : 20, { bytesDone: before + done, bytesTotal: Math.max(total, before + all) }),
            }),
          );
        } catch (err) {
          const e = toSmError(err);
          fail(wanted[i]!.key, e);
          throw itemError(e, items.get(wanted[i]!.key)!, 'nothing was changed');
        }
        before += r.need.downloadBytes;
      }
      op.progress(20);
      const layerImages = fetched.slice(0, desired.layers.length);
      const serviceImages = new Map(changes.map((p, i) => [p.id, { image: fetched[desired.layers.length + i]!, signedBy: resolved[desired.layers.length + i]!.signedBy }]));
      store.setLayers(op.id, [...new Set(layerImages.flatMap((img) => img.layers.map((l) => l.digest)))]);

      // 2. Layers, then services, each health-gated; a failure puts back what this apply changed.
      op.step('layers');
      for (const [i, img] of layerImages.entries()) {
        const done = await layers.exclusive(() => layers.ensureLayers(img, { layerId: img.layerId, osVersion: img.osVersion }));
        if (done.extracted.length > 0) items.get(key('layer', desired.layers[i]!.image))!.outcome = 'installed';
      }
      op.progress(30);
      const group = services.beginGroup(op, createdAt);
      const span = changes.length > 0 ? 60 / changes.length : 0;
      for (const [i, p] of changes.entries()) {
        const s = desired.services.find((x) => x.id === p.id)!;
        try {
          items.get(key('service', p.id))!.outcome = await group.change({ id: p.id, version: s.version, ...serviceImages.get(p.id)!, settings: s.settings }, [30 + i * span, 30 + (i + 1) * span]);
        } catch (err) {
          const e = toSmError(err);
          fail(key('service', p.id), e);
          op.step('rollback', `${p.id} failed: ${e.message}`);
          const back = await group.rollback();
          for (const id of back.rolledBack) items.get(key('service', id))!.outcome = 'rolledBack';
          for (const f of back.failed) Object.assign(items.get(key('service', f.id))!, { outcome: 'failed', error: `could not be put back: ${f.error}` });
          const outcome = back.failed.length === 0 ? `${back.rolledBack.length} changed services were put back` : `putting back ${back.failed.map((f) => f.id).join(', ')} failed`;
          throw itemError(e, items.get(key('service', p.id))!, outcome);
        }
      }

      // 3. Every change held: commit, then removals, then the layer prune.
      op.step('commit');
      op.progress(90);
      committed = true;
      await group.commit(removals.map((r) => r.id));
      const removeFailures: string[] = [];
      if (removals.length > 0) op.step('remove', removals.map((r) => r.id).join(', '));
      for (const r of removals) {
        try {
          await group.remove(r.id);
          items.get(key('service', r.id))!.outcome = 'removed';
        } catch (err) {
          // Committed: the changes stay; the operation fails naming what could not be removed.
          const e = toSmError(err);
          fail(key('service', r.id), e);
          logger.error('removal in a desired state failed', { id: r.id, err: e });
          removeFailures.push(`${r.id}: ${e.message}`);
        }
      }
      op.step('cleanup');
      await layers.prune();
      if (removeFailures.length > 0) throw new SmError('INTERNAL', `desired state ${desired.version} was applied but removing failed: ${removeFailures.join('; ')}`, { item: { kind: 'service', id: removals[0]!.id } });
      store.finish(op.id, 'succeeded', list());
      return { version: desired.version, items: list() };
    } catch (err) {
      const e = toSmError(err);
      const tied = e.details !== undefined && 'item' in e.details;
      const where = committed ? 'was applied but did not finish' : 'was not applied, nothing was changed';
      const final = tied ? new SmError(e.code, e.message, { ...e.details, items: list() }) : new SmError(e.code, `desired state ${desired.version} ${where}: ${e.message}`, { ...(e.details ?? {}), items: list() });
      store.finish(op.id, 'failed', list(), { code: final.code, message: final.message });
      // Layers this apply unpacked and no service uses (the state's own are no longer kept once it failed).
      if (!committed) await layers.prune().catch((pruneErr: unknown) => logger.error('prune after a failed apply failed', { err: pruneErr }));
      throw final;
    } finally {
      // Every resolved image, fetched or not: a URL's archive is downloaded when it is resolved.
      for (const r of resolved) await sources.release(r.info).catch((err: unknown) => logger.warn('releasing a fetched image failed', { err }));
    }
  }
}

function itemError(reason: SmError, item: ItemResult, outcome: string): SmError {
  const what = item.kind === 'service' ? `service ${item.id}${item.to !== undefined ? ` version ${item.to}` : ''}` : `layer ${item.id}`;
  return new SmError(reason.code, `desired state failed at ${what} and ${outcome}: ${reason.message}`, { ...(reason.details ?? {}), item: { kind: item.kind, id: item.id } });
}

export type { PlannedService };

