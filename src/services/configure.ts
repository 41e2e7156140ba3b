import { SmError, toSmError } from '../errors.js';
import { withService, type ServiceContext } from './context.js';
import type { ServiceFiles } from './files.js';
import { usersKey } from './layout.js';
import { checkPortConflicts, resolvePorts } from './ports.js';
import type { Lifecycle } from './lifecycle.js';
import { columnsToSettings, settingsToColumns, type Settings } from './settings.js';
import type { ImageConfigJson, Row, Service } from './types.js';

/**
 * services.configure: settings changed, applied to the unit, quotas, traffic limits and the
 * network policy at once (the policy and DNS rules without a restart).
 */
export class Configurator {
  constructor(
    private readonly ctx: ServiceContext,
    private readonly files: ServiceFiles,
    private readonly lifecycle: Lifecycle,
  ) {}

  configure(id: string, changes: Settings, expectedRowVersion?: number): Promise<Service> {
    return withService(this.ctx, id, async (users) => {
      const { repo, layout } = this.ctx;
      const row = repo.get(id);
      if (expectedRowVersion !== undefined && expectedRowVersion !== row.rowVersion) {
        throw new SmError('CONFLICT', `${id} changed meanwhile (rowVersion ${row.rowVersion}, expected ${expectedRowVersion})`, { rowVersion: row.rowVersion });
      }
      const settings = resolvePorts({ ...columnsToSettings(row), ...changes }, (JSON.parse(row.imageConfig) as ImageConfigJson).exposedPorts);
      const columns = settingsToColumns(settings);
      const changed = Object.entries(columns).some(([k, v]) => (row as Record<string, unknown>)[k] !== v);
      if (!changed) return this.lifecycle.view(id);
      if (changes.exposedPorts) checkPortConflicts(repo.all(), id, settings);
      repo.setSettings(row, settings);
      const updated = repo.get(id);
      const shouldRun = this.lifecycle.shouldRun(updated, repo.attachedTo(users));
      const key = usersKey(users);
      const quotas = [
        { limit: updated.storageLimit, before: row.storageLimit, dir: layout.dataDirOf(key, id) },
        { limit: updated.stateLimit, before: row.stateLimit, dir: layout.stateDirOf(key, id) },
      ].filter((q) => q.limit && q.limit !== q.before);
      if (quotas.length > 0) {
        // A quota is created or changes size only while the service is stopped (prepare creates it).
        await this.lifecycle.stopUnit(updated);
        await this.files.unmountRoot(id);
        let failure: unknown = null;
        try {
          for (const q of quotas) if (this.ctx.host.hasQuota(q.dir)) await this.ctx.host.resizeQuota(q.dir, q.limit!);
          await this.files.prepare(updated, users);
        } catch (err) {
          failure = err;
        }
        // Started again whatever happened; the first failure is the one the caller learns.
        if (shouldRun) {
          try {
            await this.lifecycle.startUnit(updated, users);
          } catch (err) {
            if (failure === null) failure = err;
            else this.ctx.logger.warn('start after a failed configure failed too', { id, err });
          }
        }
        if (failure !== null) throw failure;
      }
      await this.files.prepare(updated, users);
      await this.ctx.networking?.updateLimits?.(id, columnsToSettings(updated));
      if (shouldRun && needsRestart(row, updated)) {
        try {
          await this.ctx.systemd.restartUnit(updated.unit!);
        } catch (err) {
          const e = toSmError(err, 'SYSTEMD');
          throw new SmError(e.code === 'UNAVAILABLE' ? 'UNAVAILABLE' : 'SYSTEMD', `${id}: the settings were saved but the restart that applies them failed: ${e.message}`, { id, ...(e.details ?? {}) });
        }
      }
      return this.lifecycle.view(id);
    });
  }
}

function needsRestart(before: Row, after: Row): boolean {
  // Limits systemd applies on the next start; env and devices need a restart too.
  return before.settings !== after.settings || before.deviceResources !== after.deviceResources || before.hostname !== after.hostname;
}
