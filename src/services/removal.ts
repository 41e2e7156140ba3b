import { join } from 'node:path';
import { notFound } from '../errors.js';
import type { Operation } from '../operations/operations.js';
import { unitNameFor } from '../systemd/unit.js';
import { ignoreUnknownUnit, withServiceOnly, type ServiceContext } from './context.js';
import { SERVICE_ID } from './layout.js';
import { STATE, STATUS } from './types.js';

/** services.remove, and `purge`: every trace of a service, also for undoing an install. */
export class Removal {
  constructor(private readonly ctx: ServiceContext) {}

  /** True when anything of the service exists: row, unit file or files. */
  anyTrace(id: string): boolean {
    if (this.ctx.repo.find(id)) return true;
    return this.ctx.host.exists(join(this.ctx.config.systemd.unitDir, unitNameFor(id))) || this.ctx.host.exists(this.ctx.layout.serviceDir(id));
  }

  remove(id: string): Operation {
    if (!SERVICE_ID.test(id) || !this.anyTrace(id)) throw notFound(`service ${id}`, { id });
    return this.ctx.operations.start({
      kind: 'services.remove',
      target: id,
      inputs: { id },
      work: (op) =>
        withServiceOnly(this.ctx, id, async () => {
          op.step('remove');
          await this.purge(id);
          op.step('prune-layers');
          await this.ctx.layers.prune();
          return { removed: id };
        }),
    });
  }

  /**
   * Removes every trace of a service, tolerating any part already gone: stop, unit file,
   * mount, rows, files, account. The row goes last but one, so a crash leaves it to retry.
   */
  async purge(id: string): Promise<void> {
    const { systemd, host, layout, repo } = this.ctx;
    const row = repo.find(id);
    const unit = unitNameFor(id);
    await systemd.stopUnit(unit).catch(ignoreUnknownUnit(this.ctx, 'stop before removal', { id }));
    await systemd.resetFailedUnit(unit).catch(ignoreUnknownUnit(this.ctx, 'reset-failed before removal', { id }));
    await systemd.removeUnit(unit);
    await host.unmount(layout.rootDir(id));
    await this.ctx.networking?.remove(id);
    // The account goes while the row still names its uid: a crash after this is retried in full.
    if (row?.uid) await host.removeAccount(row.uid);
    await this.ctx.layers.exclusive(async () => repo.delete(id));
    await host.remove(join(layout.mountsRoot(), id));
    await host.remove(layout.serviceDir(id));
    for (const key of await host.listDir(layout.storageRoot())) {
      for (const dir of [layout.dataDirOf(key, id), layout.stateDirOf(key, id)]) await host.removeQuota(dir).catch((err: unknown) => this.ctx.logger.warn('removing a quota failed', { id, dir, err }));
      await host.remove(layout.storageDir(key, id));
    }
    this.ctx.bus.publish('service', { id, state: STATE.stopped, status: STATUS.ok, reason: 'removed' });
  }
}
