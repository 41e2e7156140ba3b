import { toSmError } from '../errors.js';
import type { Operation } from '../operations/operations.js';
import { USERS_LOCK, type ServiceContext } from '../services/context.js';
import type { ServiceFiles } from '../services/files.js';
import { canonicalUsers } from '../services/layout.js';
import type { Lifecycle } from '../services/lifecycle.js';

export interface SwitchResult {
  users: string[];
  stopped: string[];
  started: string[];
  failed: { id: string; error: string }[];
}

/**
 * users.set: the device switches to another set of claims in one operation. It holds the users
 * lock exclusively: no service action runs meanwhile, so none sees the users change under it.
 */
export class UsersSwitch {
  constructor(
    private readonly ctx: ServiceContext,
    private readonly files: ServiceFiles,
    private readonly lifecycle: Lifecycle,
  ) {}

  setUsers(claims: string[]): Operation {
    const next = canonicalUsers(claims);
    return this.ctx.operations.start({
      kind: 'users.set',
      target: next,
      inputs: { users: JSON.parse(next) as string[] },
      lockKey: 'users',
      work: (op) =>
        this.ctx.locks.run(USERS_LOCK, async () => {
          const { repo } = this.ctx;
          const previous = repo.currentUsers();
          const result: SwitchResult = { users: JSON.parse(next) as string[], stopped: [], started: [], failed: [] };
          if (previous === next) return result;
          op.record({ previous });
          op.step('stop', `services of ${previous}`);
          for (const id of repo.attachedTo(previous)) {
            await this.ctx.locks.run(`service:${id}`, async () => {
              const row = repo.find(id);
              if (!row) return;
              try {
                await this.lifecycle.stopUnit(row);
              } catch (err) {
                // Still running: its mounts stay, and it is not counted stopped.
                result.failed.push({ id, error: toSmError(err).message });
                return;
              }
              result.stopped.push(id);
              // A mount that stays busy is reported; the switch goes on for the others.
              await this.files.releaseMounts(row, previous).catch((err: unknown) => result.failed.push({ id, error: toSmError(err).message }));
            });
          }
          repo.setCurrentUsers(next);
          this.ctx.bus.publish('users', { users: result.users, change: 'switched' });
          op.step('start', `services of ${next}`);
          for (const id of repo.attachedTo(next)) {
            await this.ctx.locks.run(`service:${id}`, async () => {
              const row = repo.find(id);
              if (!row || row.desired !== 'running') return;
              try {
                await this.files.prepare(row, next);
                await this.lifecycle.startUnit(row, next);
                result.started.push(id);
              } catch (err) {
                result.failed.push({ id, error: toSmError(err).message });
              }
            });
          }
          return result;
        }),
    });
  }

  view(): { users: string[]; services: string[] } {
    const current = this.ctx.repo.currentUsers();
    return { users: JSON.parse(current) as string[], services: [...this.ctx.repo.attachedTo(current)].sort() };
  }
}
