import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { and, eq, sql } from 'drizzle-orm';
import type { Db } from '../db/database.js';
import { users as usersTable } from '../db/schema.js';
import type { EventBus } from '../events/bus.js';
import type { Logger } from '../log.js';
import { usersKey, type ServiceLayout } from '../services/layout.js';

const DEBOUNCE_MS = 300;

/**
 * Keeps users.stateCheckSum equal to the sha256 of each running service's state file: it
 * recomputes when the file changes (inotify, debounced) and when the service stops, and
 * publishes a `users` event with change `state` when the checksum changed.
 */
export class StateTracker {
  private readonly watchers = new Map<string, { watcher: FSWatcher; timer: NodeJS.Timeout | null }>();
  private readonly off: () => void;

  constructor(
    private readonly deps: { db: Db; bus: EventBus; logger: Logger; layout: ServiceLayout; currentUsers: () => string },
  ) {
    this.off = deps.bus.subscribe('service', (e) => {
      if (e.state === 1) this.watch(e.id);
      else void this.unwatch(e.id, e.reason !== 'removed');
    });
  }

  close(): void {
    this.off();
    for (const id of [...this.watchers.keys()]) void this.unwatch(id, false);
  }

  /** sha256 of the state file of the current users, or null when there is none. */
  async checksum(serviceId: string): Promise<Buffer | null> {
    const file = this.deps.layout.stateFileOf(usersKey(this.deps.currentUsers()), serviceId);
    try {
      return createHash('sha256').update(await readFile(file)).digest();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  /** Recomputes and stores the checksum; returns whether it changed. */
  async refresh(serviceId: string): Promise<boolean> {
    const users = this.deps.currentUsers();
    const sum = await this.checksum(serviceId);
    const where = and(eq(usersTable.users, users), eq(usersTable.serviceid, serviceId));
    const row = this.deps.db.select({ sum: usersTable.stateCheckSum }).from(usersTable).where(where).get();
    if (!row || (row.sum === null ? sum === null : sum !== null && Buffer.compare(row.sum, sum) === 0)) return false;
    this.deps.db
      .update(usersTable)
      .set({ stateCheckSum: sum, updatedAt: Date.now(), rowVersion: sql`${usersTable.rowVersion} + 1` })
      .where(where)
      .run();
    this.deps.bus.publish('users', { users: JSON.parse(users) as string[], change: 'state', serviceId });
    return true;
  }

  private watch(serviceId: string): void {
    if (this.watchers.has(serviceId)) return;
    const dir = this.deps.layout.stateDirOf(usersKey(this.deps.currentUsers()), serviceId);
    let watcher: FSWatcher;
    try {
      watcher = watch(dir);
    } catch (err) {
      this.deps.logger.warn('cannot watch a state folder', { serviceId, dir, err });
      return;
    }
    const entry = { watcher, timer: null as NodeJS.Timeout | null };
    watcher.on('change', () => {
      if (entry.timer) clearTimeout(entry.timer);
      entry.timer = setTimeout(() => {
        entry.timer = null;
        this.refresh(serviceId).catch((err: unknown) => this.deps.logger.warn('state checksum failed', { serviceId, err }));
      }, DEBOUNCE_MS);
    });
    watcher.on('error', () => void this.unwatch(serviceId, false));
    this.watchers.set(serviceId, entry);
    void this.refresh(serviceId).catch(() => {});
  }

  private async unwatch(serviceId: string, refresh: boolean): Promise<void> {
    const entry = this.watchers.get(serviceId);
    if (entry) {
      if (entry.timer) clearTimeout(entry.timer);
      entry.watcher.close();
      this.watchers.delete(serviceId);
    }
    if (refresh) await this.refresh(serviceId).catch((err: unknown) => this.deps.logger.warn('state checksum failed', { serviceId, err }));
  }
}
