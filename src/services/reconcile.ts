import type { Operation } from '../operations/operations.js';
import { withService, type ServiceContext } from './context.js';
import type { ServiceFiles } from './files.js';
import { recoverGroup, type GroupRecord } from './group.js';
import type { Installer } from './install.js';
import type { Lifecycle } from './lifecycle.js';
import type { Removal } from './removal.js';
import { STATE, STATUS, type Row } from './types.js';

export type ReconcileReport = { rolledBack: string[]; finishedRemovals: string[]; orphans: string[]; started: string[]; failed: string[] };

/** Start-up reconciliation (after a crash or reboot) and resumption after systemd came back. */
export class Reconciler {
  constructor(
    private readonly ctx: ServiceContext,
    private readonly files: ServiceFiles,
    private readonly lifecycle: Lifecycle,
    private readonly installer: Installer,
    private readonly removal: Removal,
  ) {}

  /**
   * Finish or undo what interrupted operations left, remove orphans (units, mounts, directories
   * without a row) and start what should run.
   */
  async reconcile(interrupted: Operation[]): Promise<ReconcileReport> {
    const report: ReconcileReport = { rolledBack: [], finishedRemovals: [], orphans: [], started: [], failed: [] };
    const { repo, host, layout } = this.ctx;
    const users = repo.currentUsers();
    for (const op of interrupted) {
      const group = op.inputs.group as GroupRecord | undefined;
      if (group) {
        // A group (the desired state's apply): finished when it had committed, else undone in full.
        try {
          const r = await recoverGroup(this.ctx, this.installer, this.removal, group, op.createdAt);
          if (r.outcome === 'finished') report.finishedRemovals.push(...r.ids);
          else report.rolledBack.push(...r.ids);
        } catch (err) {
          this.ctx.logger.error('could not finish or undo an interrupted group', { operationId: op.id, kind: op.kind, err });
          report.failed.push(...group.order);
        }
        continue;
      }
      const id = typeof op.inputs.id === 'string' ? op.inputs.id : null;
      if (!id) continue;
      // One service that cannot be finished or undone must not keep the others from starting.
      try {
        if (op.kind === 'services.remove') {
          await this.removal.purge(id);
          report.finishedRemovals.push(id);
        } else if (op.kind === 'services.install') {
          // Undo only what the install recorded it was doing: an update is rolled back to the
          // previous row, a fresh install removed (if its row is its own); an install killed
          // before it changed anything, or an attach, leaves the service as it is.
          const previous = op.inputs.previous as Row | undefined;
          const row = repo.find(id);
          if (op.inputs.mode === 'update' && previous && op.inputs.committed === true) {
            // The new version had proven itself: finish its clean-up, keep it.
            await this.installer.finishUpdate(previous);
            continue;
          }
          if (op.inputs.mode === 'update' && previous) await this.installer.rollback(previous, Number(op.inputs.version), users);
          else if (op.inputs.mode === 'fresh' && (!row || row.createdAt >= op.createdAt)) await this.removal.purge(id);
          else continue;
          report.rolledBack.push(id);
        }
      } catch (err) {
        this.ctx.logger.error('could not finish or undo an interrupted operation', { id, kind: op.kind, err });
        report.failed.push(id);
      }
    }
    const rows = repo.all();
    const known = new Set(rows.map((r) => r.id));
    for (const file of await host.listDir(this.ctx.config.systemd.unitDir)) {
      const m = /^smd-(.+)\.service$/.exec(file);
      if (m && !known.has(m[1]!)) {
        await this.removal.purge(m[1]!).then(
          () => report.orphans.push(file),
          (err: unknown) => (this.ctx.logger.error('could not remove an orphan unit', { file, err }), report.failed.push(m[1]!)),
        );
      }
    }
    const mountRoot = layout.mountsRoot();
    for (const mp of await host.mountPoints()) {
      const m = mp.startsWith(mountRoot + '/') ? /^([^/]+)\/root$/.exec(mp.slice(mountRoot.length + 1)) : null;
      if (m && !known.has(m[1]!)) {
        await host.unmount(mp);
        report.orphans.push(mp);
      }
    }
    for (const name of await host.listDir(layout.servicesRoot())) {
      if (!known.has(name)) {
        await host.remove(layout.serviceDir(name));
        report.orphans.push(layout.serviceDir(name));
      }
    }
    const attached = repo.attachedTo(users);
    // Files of all services at once (their I/O overlaps), then one reload if any unit changed.
    let unitsChanged = false;
    const ready: Row[] = [];
    const passwd = await host.readPasswd();
    await forEachLimit(rows, 16, async (row) => {
      try {
        // Quotas only for what will run: nothing would release them otherwise.
        const quotas = this.lifecycle.shouldRun(row, attached);
        unitsChanged = (await this.files.prepare(row, users, { reload: false, passwd, quotas })) || unitsChanged;
        ready.push(row);
      } catch (err) {
        this.ctx.logger.error('could not restore service files', { id: row.id, err });
        // It cannot run now: the database must not keep saying it does.
        if (this.lifecycle.shouldRun(row, attached)) this.lifecycle.markState(row.id, STATE.failed, STATUS.error);
        report.failed.push(row.id);
      }
    });
    if (unitsChanged) await this.ctx.systemd.reload();
    const mounted = new Set(await host.mountPoints());
    for (const row of ready) {
      try {
        const state = this.ctx.systemd.knownUnit(row.unit!);
        if (!this.lifecycle.shouldRun(row, attached)) {
          // E.g. a users.set interrupted between stopping and starting.
          if (state && state.activeState !== 'inactive' && state.activeState !== 'failed') await this.lifecycle.stopUnit(row);
          await this.files.releaseMounts(row, users);
        } else if (state?.activeState === 'active') {
          if (!mounted.has(layout.rootDir(row.id))) await this.files.mountRoot(row, users);
          this.lifecycle.markState(row.id, STATE.running, STATUS.ok);
        } else {
          await this.lifecycle.startUnit(row, users);
          report.started.push(row.id);
        }
      } catch (err) {
        this.ctx.logger.error('could not restore service', { id: row.id, err });
        report.failed.push(row.id);
      }
    }
    return report;
  }

  /** After systemd came back: start what should run and does not (each under its lock). */
  async resume(): Promise<void> {
    const { repo } = this.ctx;
    const attached = repo.attachedTo(repo.currentUsers());
    for (const row of repo.all()) {
      if (!this.lifecycle.shouldRun(row, attached)) continue;
      const state = this.ctx.systemd.knownUnit(row.unit!);
      if (state?.activeState === 'active' || state?.activeState === 'activating') continue;
      await withService(this.ctx, row.id, async (users) => {
        // Decided before the lock; the user may have stopped it (or users changed) meanwhile.
        const now = repo.find(row.id);
        if (!now || !this.lifecycle.shouldRun(now, repo.attachedTo(users))) return;
        const unit = this.ctx.systemd.knownUnit(now.unit!);
        if (unit?.activeState === 'active' || unit?.activeState === 'activating') return;
        await this.lifecycle.startUnit(now, users);
      }).catch((err: unknown) => this.ctx.logger.warn('could not restart service after resync', { id: row.id, err }));
    }
  }
}

/** Runs `fn` over `items` with at most `limit` running at once. */
async function forEachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
