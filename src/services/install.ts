import { SmError, toSmError } from '../errors.js';
import type { ImageInfo } from '../images/index.js';
import type { ImageRef } from '../images/sources.js';
import type { Operation, OperationHandle } from '../operations/operations.js';
import { ignoreUnknownUnit, withService, type ServiceContext } from './context.js';
import type { ServiceFiles } from './files.js';
import { SERVICE_ID } from './layout.js';
import { checkPortConflicts, resolvePorts } from './ports.js';
import type { Lifecycle } from './lifecycle.js';
import type { Removal } from './removal.js';
import { columnsToSettings, settingsFromAnnotations, type Settings } from './settings.js';
import type { ImageConfigJson, InstallRequest, Row, Service } from './types.js';

/**
 * services.install: a fresh install, an update of a lower version (rolled back when the new one
 * does not stay active), or an attach of the installed version to the current users.
 */
export class Installer {
  constructor(
    private readonly ctx: ServiceContext,
    private readonly files: ServiceFiles,
    private readonly lifecycle: Lifecycle,
    private readonly removal: Removal,
  ) {}

  /** Checks what can be checked before an operation starts, so obvious refusals are immediate. */
  precheck(req: InstallRequest): void {
    if (req.id !== undefined && !SERVICE_ID.test(req.id)) throw new SmError('INVALID_IMAGE', `invalid service id ${JSON.stringify(req.id)}`);
    if (req.id !== undefined && req.version !== undefined) {
      const existing = this.ctx.repo.find(req.id);
      if (existing && !this.isAttachable(existing, req.version, req.force, this.ctx.repo.currentUsers())) checkVersion(existing, req.version, req.force ?? false);
    }
    // Ports asked for in the request: refused at once (the operation checks again with the image's defaults).
    if (req.settings?.exposedPorts) checkPortConflicts(this.ctx.repo.all(), req.id ?? '', req.settings);
  }

  install(req: InstallRequest): Operation {
    this.precheck(req);
    return this.ctx.operations.start({
      kind: 'services.install',
      target: req.id ?? null,
      inputs: { image: req.image, ...(req.id ? { id: req.id } : {}), ...(req.version ? { version: req.version } : {}), force: req.force ?? false },
      work: async (op) => {
        const { image, signedBy } = await fetchImage(this.ctx, op, req);
        const id = req.id ?? image.annotations['io.smd.id'];
        const version = req.version ?? Number(image.annotations['io.smd.version']);
        if (!id || !SERVICE_ID.test(id)) throw new SmError('INVALID_IMAGE', `no valid service id: pass id or set the io.smd.id annotation (got ${JSON.stringify(id ?? null)})`);
        if (!Number.isSafeInteger(version) || version < 0) throw new SmError('INVALID_IMAGE', 'no valid version: pass version or set the io.smd.version annotation');
        if (image.config.entrypoint.length + image.config.cmd.length === 0) throw new SmError('INVALID_IMAGE', 'the image has neither Entrypoint nor Cmd');
        op.record({ id, version });
        op.setTarget(id);
        const installed = withService(this.ctx, id, async (users) => {
          const existing = this.ctx.repo.find(id);
          const settings = resolvePorts({ ...settingsFromAnnotations(image.annotations), ...(existing ? columnsToSettings(existing) : {}), ...(req.settings ?? {}) }, image.config.exposedPorts);
          if (existing) {
            if (this.isAttachable(existing, version, req.force, users)) return this.attach(op, existing, users);
            checkVersion(existing, version, req.force ?? false);
            return this.update(op, existing, image, version, settings, users, signedBy);
          }
          return this.freshInstall(op, id, image, version, settings, users, signedBy);
        });
        return installed.finally(() => this.ctx.sources.release(image));
      },
    });
  }

  /** The same version installed for other users: installing it again attaches it to the current ones. */
  private isAttachable(existing: Pick<Row, 'id' | 'version'>, version: number, force: boolean | undefined, users: string): boolean {
    return !force && existing.version === version && !this.ctx.repo.attachedTo(users).has(existing.id);
  }

  private async attach(op: OperationHandle, row: Row, users: string): Promise<Service> {
    op.record({ mode: 'attach' });
    op.step('attach', `to ${users}`);
    this.ctx.repo.attach(users, row.id);
    await this.files.prepare(row, users);
    if (row.desired === 'running') await this.lifecycle.startAndSettle(row, users);
    return this.lifecycle.view(row.id);
  }

  private async freshInstall(op: OperationHandle, id: string, image: ImageInfo, version: number, settings: Settings, users: string, signedBy: string | null): Promise<Service> {
    // Before anything exists: recovery after a crash may undo only what this install created.
    op.record({ mode: 'fresh' });
    op.step('layers');
    try {
      await this.ctx.layers.exclusive(async () => {
        await this.ctx.layers.ensureLayers(image, {}, (f) => op.progress(10 + f * 60));
        checkPortConflicts(this.ctx.repo.all(), id, settings);
        this.ctx.repo.insert(id, version, layerDigests(image), imageConfigOf(image), settings, users, signedBy);
      });
      op.step('prepare');
      await this.files.prepare(this.ctx.repo.get(id), users);
      op.step('start');
      op.progress(80);
      await this.lifecycle.startAndSettle(this.ctx.repo.get(id), users);
      return this.lifecycle.view(id);
    } catch (err) {
      const e = toSmError(err);
      this.ctx.logger.warn('install failed; removing what it created', { id, err: e });
      await this.removal.purge(id).catch((cleanupErr: unknown) => this.ctx.logger.error('cleanup after failed install failed', { id, err: cleanupErr }));
      throw e;
    }
  }

  /**
   * One service of a group (the desired state's apply): a fresh install or an update to the
   * item's version, health-gated and undone on failure like services.install, but an update is
   * not finished: its previous version stays until the caller calls `finishUpdate` (the whole
   * group held) or `rollback` (another item failed). Run under `withService`.
   */
  async change(op: OperationHandle, item: { id: string; version: number; image: ImageInfo; signedBy: string | null; settings?: Settings | undefined }, users: string): Promise<{ mode: 'fresh' | 'update'; previous: Row | null }> {
    const { id, version, image } = item;
    if (image.config.entrypoint.length + image.config.cmd.length === 0) throw new SmError('INVALID_IMAGE', `the image of ${id} has neither Entrypoint nor Cmd`);
    const existing = this.ctx.repo.find(id);
    const settings = resolvePorts({ ...settingsFromAnnotations(image.annotations), ...(existing ? columnsToSettings(existing) : {}), ...(item.settings ?? {}) }, image.config.exposedPorts);
    if (existing) {
      await this.applyUpdate(op, existing, image, version, settings, users, item.signedBy);
      return { mode: 'update', previous: existing };
    }
    await this.freshInstall(op, id, image, version, settings, users, item.signedBy);
    return { mode: 'fresh', previous: null };
  }

  private async update(op: OperationHandle, previous: Row, image: ImageInfo, version: number, settings: Settings, users: string, signedBy: string | null): Promise<Service> {
    await this.applyUpdate(op, previous, image, version, settings, users, signedBy);
    op.step('cleanup');
    // Proven: from here on a crash finishes this update instead of rolling it back, and its
    // previous layers may go.
    op.record({ committed: true });
    await this.finishUpdate(previous);
    return this.lifecycle.view(previous.id);
  }

  /**
   * The new version in place of the previous one, proven by its health gate; on failure the
   * previous version is back (running as before) and the error says why. The previous version's
   * files stay: `finishUpdate` removes them once the update is committed.
   */
  private async applyUpdate(op: OperationHandle, previous: Row, image: ImageInfo, version: number, settings: Settings, users: string, signedBy: string | null): Promise<void> {
    const id = previous.id;
    const { repo, layers } = this.ctx;
    // Before anything stops: a port another service holds refuses the update, nothing to roll back.
    checkPortConflicts(repo.all(), id, settings);
    op.record({ mode: 'update', previous });
    op.step('stop-previous', `v${previous.version}`);
    try {
      // Inside the try: a stop that fails or a root that stays busy is a failed update, rolled back.
      await this.lifecycle.stopUnit(previous);
      await this.files.unmountRoot(id);
      op.step('layers');
      await layers.exclusive(async () => {
        await layers.ensureLayers(image, {}, (f) => op.progress(10 + f * 50));
        repo.setVersion(previous, version, layerDigests(image), imageConfigOf(image), settings, signedBy);
      });
      op.step('start', `v${version}`);
      op.progress(70);
      await this.files.prepare(repo.get(id), users);
      await this.lifecycle.startAndSettle(repo.get(id), users);
      // Proven; a service the current users do not use does not stay running.
      if (!this.lifecycle.shouldRun(repo.get(id), repo.attachedTo(users))) {
        await this.lifecycle.stopUnit(repo.get(id));
        await this.files.releaseMounts(repo.get(id), users);
      }
    } catch (err) {
      const reason = toSmError(err);
      op.step('rollback', `v${version} did not stay active: ${reason.message}`);
      const code = reason.code === 'UNAVAILABLE' ? 'UNAVAILABLE' : 'SYSTEMD';
      let restored = true;
      let rollbackError: SmError | null = null;
      try {
        await this.rollback(previous, version, users);
      } catch (rbErr) {
        // The update's own failure is what the caller must learn; the rollback's comes with it.
        restored = false;
        rollbackError = toSmError(rbErr);
        this.ctx.logger.error('rollback after a failed update failed', { id, err: rollbackError });
      }
      await layers.prune().catch((pruneErr: unknown) => this.ctx.logger.error('prune after a failed update failed', { id, err: pruneErr }));
      const outcome = restored ? `version ${previous.version} was restored` : `the rollback to version ${previous.version} failed too: ${rollbackError!.message}`;
      throw new SmError(code, `update of ${id} to version ${version} failed and ${outcome}: ${reason.message}`, {
        ...(restored ? { restoredVersion: previous.version } : { rollbackError: rollbackError!.message }),
        ...(reason.details ?? {}),
      });
    }
  }

  /**
   * The clean-up of a proven update: the previous version's files and unreferenced layers
   * (`prune: false` when the caller prunes once for several).
   */
  async finishUpdate(previous: Row, opts: { prune?: boolean } = {}): Promise<void> {
    await this.files.removeVersionFiles(previous.id, previous.version ?? 0);
    if (opts.prune ?? true) await this.ctx.layers.prune();
  }

  /** Puts the previous version back, running as before. Also used by start-up recovery. */
  async rollback(previous: Row, failedVersion: number, users: string): Promise<void> {
    const id = previous.id;
    const current = this.ctx.repo.find(id);
    if (current) await this.lifecycle.stopUnit(current).catch(ignoreUnknownUnit(this.ctx, 'stop before rollback', { id }));
    await this.files.unmountRoot(id);
    await this.ctx.layers.exclusive(async () => this.ctx.repo.restore(previous));
    if (failedVersion !== previous.version) await this.files.removeVersionFiles(id, failedVersion);
    const restored = this.ctx.repo.get(id);
    await this.files.prepare(restored, users);
    if (this.lifecycle.shouldRun(restored, this.ctx.repo.attachedTo(users))) await this.lifecycle.startUnit(restored, users);
  }
}

function checkVersion(existing: Pick<Row, 'id' | 'version'>, version: number, force: boolean): void {
  if ((existing.version ?? 0) >= version && !force) {
    throw new SmError('CONFLICT', `${existing.id} version ${existing.version} is installed; ${version} is not higher (pass force to install it anyway)`, { installed: existing.version, requested: version });
  }
}

function layerDigests(image: ImageInfo): string[] {
  return image.layers.map((l) => l.digest);
}

function imageConfigOf(image: ImageInfo): ImageConfigJson {
  return { entrypoint: image.config.entrypoint, cmd: image.config.cmd, env: image.config.env, workingDir: image.config.workingDir, ...(image.config.exposedPorts ? { exposedPorts: image.config.exposedPorts } : {}) };
}

/**
 * Resolves the request's image (its signature checked there: UNTRUSTED before any blob is
 * fetched), checks the disk space its missing layers need and fetches it: progress 0–10 % is the
 * download (by bytes).
 */
async function fetchImage(ctx: ServiceContext, op: OperationHandle, ref: ImageRef): Promise<{ image: ImageInfo; signedBy: string | null }> {
  op.step('resolve', ref.image);
  const resolved = await ctx.sources.resolve(ref);
  if (resolved.signedBy !== null) op.record({ signedBy: resolved.signedBy });
  await ctx.sources.ensureSpace([resolved]);
  op.step('fetch', ref.image);
  const image = await ctx.sources.fetch(resolved, { onProgress: (bytesDone, bytesTotal) => op.progress(bytesTotal > 0 ? (bytesDone / bytesTotal) * 10 : 10, { bytesDone, bytesTotal }) });
  return { image, signedBy: resolved.signedBy };
}
