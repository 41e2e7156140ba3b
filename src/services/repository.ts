import { and, eq, sql } from 'drizzle-orm';
import type { Db } from '../db/database.js';
import { config as configTable, services, users as usersTable } from '../db/schema.js';
import { SmError, notFound } from '../errors.js';
import { parseLayerList } from '../layers/store.js';
import { unitNameFor } from '../systemd/unit.js';
import { accountName } from './accounts.js';
import { ServiceLayout, usersKey } from './layout.js';
import { columnsToSettings, settingsToColumns, type Settings } from './settings.js';
import { STATE, STATUS, type ImageConfigJson, type Row, type Service } from './types.js';

/**
 * Every query of the `services` and `users` tables (and config.currentUsers): the one place
 * that knows their columns. Synchronous, like better-sqlite3.
 */
export class ServiceRepository {
  /** Prepared once: asked for every service on every start (building the query each time cost ~15 ms with 200). */
  private readonly currentUsersQuery;
  /** Writes only a change; asked for every service at start and on every unit event. */
  private readonly markStateQuery;

  constructor(
    private readonly db: Db,
    private readonly layout: ServiceLayout,
    private readonly uidRange: readonly [number, number],
  ) {
    this.currentUsersQuery = db.select({ u: configTable.currentUsers }).from(configTable).prepare();
    const [state, status] = [sql.placeholder('state'), sql.placeholder('status')];
    this.markStateQuery = db
      .update(services)
      .set({ state: sql`${state}`, status: sql`${status}` })
      .where(and(eq(services.id, sql.placeholder('id')), sql`(${services.state} IS NOT ${state} OR ${services.status} IS NOT ${status})`))
      .prepare();
  }

  all(): Row[] {
    return this.db.select().from(services).orderBy(services.id).all();
  }

  /** The row, or null when there is none. */
  find(id: string): Row | null {
    return this.db.select().from(services).where(eq(services.id, id)).get() ?? null;
  }

  /** The row; NOT_FOUND when there is none. */
  get(id: string): Row {
    const row = this.find(id);
    if (!row) throw notFound(`service ${id}`, { id });
    return row;
  }

  /** The current users' canonical claims (config.currentUsers). */
  currentUsers(): string {
    return this.currentUsersQuery.get()?.u ?? '[]';
  }

  setCurrentUsers(canonical: string): void {
    this.db.update(configTable).set({ currentUsers: canonical, updatedAt: Date.now(), rowVersion: sql`${configTable.rowVersion} + 1` }).run();
  }

  /** Ids of the services attached to a set of users (canonical claims). */
  attachedTo(canonical: string): Set<string> {
    return new Set(
      this.db
        .select({ id: usersTable.serviceid })
        .from(usersTable)
        .where(eq(usersTable.users, canonical))
        .all()
        .map((r) => r.id),
    );
  }

  /** Attaches a service to a set of users (their storage folder); nothing when it already is. */
  attach(canonical: string, id: string): void {
    const now = Date.now();
    this.db
      .insert(usersTable)
      .values({ users: canonical, serviceid: id, storageFolder: this.layout.dataDirOf(usersKey(canonical), id), createdAt: now, updatedAt: now })
      .onConflictDoNothing()
      .run();
  }

  /** A new service with the lowest free uid, attached to `canonical`, in one transaction. */
  insert(id: string, version: number, layers: string[], image: ImageConfigJson, settings: Settings, canonical: string, signedBy: string | null = null): void {
    const [lo, hi] = this.uidRange;
    const now = Date.now();
    // Synchronous transaction: the uid choice and the insert cannot interleave with another install.
    this.db.transaction((tx) => {
      const used = new Set(
        tx
          .select({ uid: services.uid })
          .from(services)
          .all()
          .map((r) => r.uid),
      );
      let uid = lo;
      while (uid <= hi && used.has(uid)) uid++;
      if (uid > hi) throw new SmError('LIMIT', `no free uid left in ${lo}..${hi}`);
      tx.insert(services)
        .values({
          id,
          version,
          unit: unitNameFor(id),
          path: this.layout.serviceDir(id),
          uid,
          user: accountName(uid),
          state: STATE.stopped,
          status: STATUS.ok,
          desired: 'running',
          layerList: JSON.stringify(layers),
          imageConfig: JSON.stringify(image),
          signedBy,
          ...settingsToColumns(settings),
          createdAt: now,
          updatedAt: now,
        })
        .run();
      tx.insert(usersTable)
        .values({ users: canonical, serviceid: id, storageFolder: this.layout.dataDirOf(usersKey(canonical), id), createdAt: now, updatedAt: now })
        .onConflictDoNothing()
        .run();
    });
  }

  /** The row of a new version, stopped and wanted running. */
  setVersion(previous: Row, version: number, layers: string[], image: ImageConfigJson, settings: Settings, signedBy: string | null = null): void {
    this.db
      .update(services)
      .set({ version, layerList: JSON.stringify(layers), imageConfig: JSON.stringify(image), signedBy, ...settingsToColumns(settings), state: STATE.stopped, status: STATUS.ok, desired: 'running', updatedAt: Date.now(), rowVersion: previous.rowVersion + 1 })
      .where(eq(services.id, previous.id))
      .run();
  }

  /** Puts a previous row back as it was (a newer rowVersion). */
  restore(previous: Row): void {
    const current = this.find(previous.id);
    this.db
      .update(services)
      .set({ ...previous, updatedAt: Date.now(), rowVersion: (current?.rowVersion ?? previous.rowVersion) + 1 })
      .where(eq(services.id, previous.id))
      .run();
  }

  /** Writes changed settings when the row is still at `row.rowVersion`. */
  setSettings(row: Row, settings: Settings): void {
    this.db
      .update(services)
      .set({ ...settingsToColumns(settings), updatedAt: Date.now(), rowVersion: row.rowVersion + 1 })
      .where(and(eq(services.id, row.id), eq(services.rowVersion, row.rowVersion)))
      .run();
  }

  setDesired(id: string, desired: 'running' | 'stopped'): void {
    this.db.update(services).set({ desired, updatedAt: Date.now() }).where(eq(services.id, id)).run();
  }

  setStartedAt(id: string, at = Date.now()): void {
    this.db.update(services).set({ startat: at }).where(eq(services.id, id)).run();
  }

  /** Writes state and status when they differ; returns whether it wrote. */
  markState(id: string, state: number, status: number): boolean {
    return this.markStateQuery.run({ id, state, status }).changes > 0;
  }

  /** The service's row and its users rows. */
  delete(id: string): void {
    this.db.transaction((tx) => {
      tx.delete(usersTable).where(eq(usersTable.serviceid, id)).run();
      tx.delete(services).where(eq(services.id, id)).run();
    });
  }
}

/** A row as clients see it. */
export function toService(r: Row): Service {
  return {
    id: r.id,
    version: r.version ?? 0,
    serviceProvider: r.serviceProvider,
    unit: r.unit ?? unitNameFor(r.id),
    uid: r.uid ?? 0,
    state: r.state ?? STATE.stopped,
    status: r.status ?? STATUS.ok,
    desired: r.desired,
    startat: r.startat,
    layers: parseLayerList(r.layerList),
    settings: columnsToSettings(r),
    rowVersion: r.rowVersion,
    createdAt: r.createdAt,
    updatedAt: r.updatedAt,
    signedBy: r.signedBy,
  };
}
