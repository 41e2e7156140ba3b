import { readdir, readFile, rm, mkdir } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { and, eq, sql } from 'drizzle-orm';
import type { Config } from '../config/config.js';
import type { Db } from '../db/database.js';
import { config as configTable, services, users as usersTable } from '../db/schema.js';
import { SmError, notFound, toSmError } from '../errors.js';
import type { EventBus } from '../events/bus.js';
import { ensureOwnedDir } from '../fs/dirs.js';
import { mountOverlay, mountPoints, unmount } from '../fs/mounts.js';
import { MIN_QUOTA_BYTES, ensureQuotaMount, quotaImagePath, releaseQuotaMount, removeQuota, resizeQuota } from '../fs/quota.js';
import type { ImageInfo } from '../images/index.js';
import { readUnitLog } from '../journal/logs.js';
import { loadImages, parseLayerList, type LayerStore } from '../layers/store.js';
import type { Logger } from '../log.js';
import type { Operation, OperationHandle, Operations } from '../operations/operations.js';
import type { SystemdAdapter, UnitState } from '../systemd/types.js';
import { renderUnit, unitNameFor, type UnitSpec } from '../systemd/unit.js';
import { accountName, ensureAccount, removeAccount } from './accounts.js';
import { KeyedLock } from './lock.js';
import { SERVICE_ID, ServiceLayout, canonicalUsers, usersKey } from './layout.js';
import { columnsToSettings, settingsFromAnnotations, settingsToColumns, type Settings } from './settings.js';

/** services.state / status, mirroring systemd (SPEC section 4). */
export const STATE = { stopped: 0, running: 1, failed: 2 } as const;
export const STATUS = { ok: 0, error: 1 } as const;

/** The Service object clients see (SPEC section 7). */
export interface Service {
  id: string;
  version: number;
  serviceProvider: string | null;
  unit: string;
  uid: number;
  state: number;
  status: number;
  desired: string;
  startat: number | null;
  layers: string[];
  settings: Settings;
  rowVersion: number;
  createdAt: number;
  updatedAt: number;
  /** The service's address on smd's bridge (null when traffic is disabled). */
  address?: string | null;
}

export interface LiveView {
  activeState: string;
  subState: string;
  mainPid: number | null;
  since: number | null;
  restarts: number | null;
  memoryCurrent: number | null;
  tasksCurrent: number | null;
  result: string | null;
  execMainStatus: number | null;
}

/** What a service's network provides to its unit; supplied by the traffic module when enabled. */
export interface ServiceNetworking {
  /** Creates (idempotently) the service's namespace, address and accounting; called before each start. */
  ensure(serviceId: string, limits: Settings): Promise<{ netnsPath: string; address: string }>;
  remove(serviceId: string): Promise<void>;
  /** The service's address on smd's bridge, if it has one. */
  address(serviceId: string): string | null;
  /** Applies changed limits and speeds at once. */
  updateLimits?(serviceId: string, limits: Settings): Promise<void>;
}

export interface InstallRequest {
  image: string;
  id?: string | undefined;
  version?: number | undefined;
  settings?: Settings | undefined;
  force?: boolean | undefined;
}

type Row = typeof services.$inferSelect;
type ImageConfigJson = { entrypoint: string[]; cmd: string[]; env: string[]; workingDir: string };

export interface ServiceManagerDeps {
  db: Db;
  config: Config;
  systemd: SystemdAdapter;
  layers: LayerStore;
  operations: Operations;
  bus: EventBus;
  logger: Logger;
  networking?: ServiceNetworking;
}

/**
 * Services: an OCI image becomes a sandboxed systemd unit that smd starts, watches, updates
 * (with rollback) and removes. Every multi-step change runs as an operation whose inputs say
 * how to finish or undo it after a crash; `reconcile()` does that at start.
 */
export class ServiceManager {
  readonly layout: ServiceLayout;
  private readonly locks = new KeyedLock();
  private readonly offUnit: () => void;
  /** Prepared once: asked for every service on every start (building the query each time cost ~15 ms with 200). */
  private readonly currentUsersQuery;
  /** Writes only a change; asked for every service at start and on every unit event. */
  private readonly markStateQuery;

  constructor(private readonly deps: ServiceManagerDeps) {
    this.layout = new ServiceLayout(deps.config.dataDir, deps.config.runDir);
    this.currentUsersQuery = deps.db.select({ u: configTable.currentUsers }).from(configTable).prepare();
    const [state, status] = [sql.placeholder('state'), sql.placeholder('status')];
    this.markStateQuery = deps.db
      .update(services)
      .set({ state: sql`${state}`, status: sql`${status}` })
      .where(and(eq(services.id, sql.placeholder('id')), sql`(${services.state} IS NOT ${state} OR ${services.status} IS NOT ${status})`))
      .prepare();
    const onUnit = (change: { unit: string; state: UnitState }) => this.onUnitChange(change.state);
    deps.systemd.on('unit', onUnit);
    this.offUnit = () => deps.systemd.off('unit', onUnit);
  }

  close(): void {
    this.offUnit();
  }

  // ---- queries -------------------------------------------------------------------------

  list(): Service[] {
    return this.deps.db
      .select()
      .from(services)
      .orderBy(services.id)
      .all()
      .map((r) => this.toService(r));
  }

  get(id: string): Service {
    return this.toService(this.row(id));
  }

  private toService(r: Row): Service {
    return { ...toService(r), address: this.deps.networking?.address(r.id) ?? null };
  }

  async live(id: string): Promise<LiveView | null> {
    const service = this.get(id);
    try {
      const v = await this.deps.systemd.getUnit(service.unit);
      return { activeState: v.activeState, subState: v.subState, mainPid: v.mainPid, since: v.since, restarts: v.restarts, memoryCurrent: v.memoryCurrent, tasksCurrent: v.tasksCurrent, result: v.result, execMainStatus: v.execMainStatus };
    } catch (err) {
      if ((err as SmError).code === 'UNAVAILABLE') return null;
      throw err;
    }
  }

  async logs(id: string, q: { lines?: number; since?: number; cursor?: string }) {
    const service = this.get(id);
    const { entries, cursor } = await readUnitLog({ unit: service.unit, ...q });
    return { entries: entries.map(({ time, priority, message }) => ({ time, priority, message })), cursor };
  }

  /** Ids of the services attached to a set of users (canonical claims). */
  attachedTo(canonical: string): Set<string> {
    return new Set(
      this.deps.db
        .select({ id: usersTable.serviceid })
        .from(usersTable)
        .where(eq(usersTable.users, canonical))
        .all()
        .map((r) => r.id),
    );
  }

  /** A service runs when the operator wants it and the current users use it. */
  private shouldRun(row: Row, attached = this.attachedTo(this.currentUsers())): boolean {
    return row.desired === 'running' && attached.has(row.id);
  }

  /** The current users' canonical claims (config.currentUsers). */
  currentUsers(): string {
    return this.currentUsersQuery.get()?.u ?? '[]';
  }

  // ---- install / update ----------------------------------------------------------------

  /** Checks what can be checked before an operation starts, so obvious refusals are immediate. */
  precheckInstall(req: InstallRequest): void {
    if (req.id !== undefined && !SERVICE_ID.test(req.id)) throw new SmError('INVALID_IMAGE', `invalid service id ${JSON.stringify(req.id)}`);
    if (req.id !== undefined && req.version !== undefined) {
      const existing = this.deps.db.select({ id: services.id, version: services.version }).from(services).where(eq(services.id, req.id)).get();
      if (existing && !this.isAttachable(existing, req.version, req.force)) this.checkVersion(req.id, req.version, req.force ?? false);
    }
  }

  install(req: InstallRequest): Operation {
    this.precheckInstall(req);
    return this.deps.operations.start({
      kind: 'services.install',
      target: req.id ?? null,
      inputs: { image: req.image, ...(req.id ? { id: req.id } : {}), ...(req.version ? { version: req.version } : {}), force: req.force ?? false },
      work: async (op) => {
        op.step('read', req.image);
        const { readImage } = await loadImages();
        const image = await readImage(req.image, { limits: this.deps.config.images });
        const id = req.id ?? image.annotations['io.smd.id'];
        const version = req.version ?? Number(image.annotations['io.smd.version']);
        if (!id || !SERVICE_ID.test(id)) throw new SmError('INVALID_IMAGE', `no valid service id: pass id or set the io.smd.id annotation (got ${JSON.stringify(id ?? null)})`);
        if (!Number.isSafeInteger(version) || version < 0) throw new SmError('INVALID_IMAGE', 'no valid version: pass version or set the io.smd.version annotation');
        if (image.config.entrypoint.length + image.config.cmd.length === 0) throw new SmError('INVALID_IMAGE', 'the image has neither Entrypoint nor Cmd');
        op.record({ id, version });
        op.setTarget(id);
        return this.locks.run(id, async () => {
          const existing = this.deps.db.select().from(services).where(eq(services.id, id)).get();
          const settings = { ...settingsFromAnnotations(image.annotations), ...(existing ? columnsToSettings(existing) : {}), ...(req.settings ?? {}) };
          if (existing) {
            if (this.isAttachable(existing, version, req.force)) return this.attach(op, existing);
            this.checkVersion(id, version, req.force ?? false);
            return this.update(op, existing, image, version, settings);
          }
          return this.freshInstall(op, id, image, version, settings);
        });
      },
    });
  }

  /** The same version installed for other users: installing it again attaches it to the current ones. */
  private isAttachable(existing: Pick<Row, 'id' | 'version'>, version: number, force: boolean | undefined): boolean {
    return !force && existing.version === version && !this.attachedTo(this.currentUsers()).has(existing.id);
  }

  private async attach(op: OperationHandle, row: Row): Promise<Service> {
    op.record({ mode: 'attach' });
    op.step('attach', `to ${this.currentUsers()}`);
    const canonical = this.currentUsers();
    const now = Date.now();
    this.deps.db
      .insert(usersTable)
      .values({ users: canonical, serviceid: row.id, storageFolder: this.layout.dataDirOf(usersKey(canonical), row.id), createdAt: now, updatedAt: now })
      .onConflictDoNothing()
      .run();
    await this.prepareFiles(row);
    if (this.shouldRun(row)) await this.startAndSettle(row);
    return this.get(row.id);
  }

  private checkVersion(id: string, version: number, force: boolean): void {
    const existing = this.deps.db.select({ version: services.version }).from(services).where(eq(services.id, id)).get();
    if (existing && (existing.version ?? 0) >= version && !force) {
      throw new SmError('CONFLICT', `${id} version ${existing.version} is installed; ${version} is not higher (pass force to install it anyway)`, { installed: existing.version, requested: version });
    }
  }

  private async freshInstall(op: OperationHandle, id: string, image: ImageInfo, version: number, settings: Settings): Promise<Service> {
    // Before anything exists: recovery after a crash may undo only what this install created.
    op.record({ mode: 'fresh' });
    op.step('layers');
    try {
      await this.deps.layers.exclusive(async () => {
        await this.deps.layers.ensureLayers(image, {}, (f) => op.progress(10 + f * 60));
        this.insertRow(id, image, version, settings);
      });
      op.step('prepare');
      await this.prepareFiles(this.row(id));
      op.step('start');
      op.progress(80);
      await this.startAndSettle(this.row(id));
      return this.get(id);
    } catch (err) {
      const e = toSmError(err);
      this.deps.logger.warn('install failed; removing what it created', { id, err: e });
      await this.purge(id).catch((cleanupErr: unknown) => this.deps.logger.error('cleanup after failed install failed', { id, err: cleanupErr }));
      throw e;
    }
  }

  private async update(op: OperationHandle, previous: Row, image: ImageInfo, version: number, settings: Settings): Promise<Service> {
    const id = previous.id;
    op.record({ mode: 'update', previous });
    op.step('stop-previous', `v${previous.version}`);
    await this.stopUnit(previous).catch(() => {});
    await unmount(this.layout.rootDir(id));
    try {
      op.step('layers');
      await this.deps.layers.exclusive(async () => {
        await this.deps.layers.ensureLayers(image, {}, (f) => op.progress(10 + f * 50));
        const now = Date.now();
        this.deps.db
          .update(services)
          .set({ version, layerList: JSON.stringify(image.layers.map((l) => l.digest)), imageConfig: JSON.stringify(imageConfigOf(image)), ...settingsToColumns(settings), state: STATE.stopped, status: STATUS.ok, desired: 'running', updatedAt: now, rowVersion: previous.rowVersion + 1 })
          .where(eq(services.id, id))
          .run();
      });
      op.step('start', `v${version}`);
      op.progress(70);
      await this.prepareFiles(this.row(id));
      await this.startAndSettle(this.row(id));
      // Proven; a service the current users do not use does not stay running.
      if (!this.shouldRun(this.row(id))) {
        await this.stopUnit(this.row(id));
        await this.releaseMounts(this.row(id));
      }
    } catch (err) {
      const reason = toSmError(err);
      op.step('rollback', `v${version} did not stay active: ${reason.message}`);
      await this.rollback(previous, version);
      await this.deps.layers.prune();
      throw new SmError(reason.code === 'UNAVAILABLE' ? 'UNAVAILABLE' : 'SYSTEMD', `update of ${id} to version ${version} failed and version ${previous.version} was restored: ${reason.message}`, {
        restoredVersion: previous.version,
        ...(reason.details ?? {}),
      });
    }
    op.step('cleanup');
    await this.removeVersionFiles(id, previous.version ?? 0);
    await this.deps.layers.prune();
    return this.get(id);
  }

  /** Puts the previous version back, running as before. Also used by start-up recovery. */
  private async rollback(previous: Row, failedVersion: number): Promise<void> {
    const id = previous.id;
    const current = this.deps.db.select().from(services).where(eq(services.id, id)).get();
    if (current) await this.stopUnit(current).catch(() => {});
    await unmount(this.layout.rootDir(id));
    await this.deps.layers.exclusive(async () => {
      this.deps.db
        .update(services)
        .set({ ...previous, updatedAt: Date.now(), rowVersion: (current?.rowVersion ?? previous.rowVersion) + 1 })
        .where(eq(services.id, id))
        .run();
    });
    if (failedVersion !== previous.version) await this.removeVersionFiles(id, failedVersion);
    const restored = this.row(id);
    await this.prepareFiles(restored);
    if (this.shouldRun(restored)) await this.startUnit(restored);
  }

  private insertRow(id: string, image: ImageInfo, version: number, settings: Settings): void {
    const [lo, hi] = this.deps.config.services.uidRange;
    const now = Date.now();
    // Synchronous transaction: the uid choice and the insert cannot interleave with another install.
    this.deps.db.transaction((tx) => {
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
          layerList: JSON.stringify(image.layers.map((l) => l.digest)),
          imageConfig: JSON.stringify(imageConfigOf(image)),
          ...settingsToColumns(settings),
          createdAt: now,
          updatedAt: now,
        })
        .run();
      const canonical = this.currentUsersIn(tx);
      tx.insert(usersTable)
        .values({ users: canonical, serviceid: id, storageFolder: this.layout.dataDirOf(usersKey(canonical), id), createdAt: now, updatedAt: now })
        .onConflictDoNothing()
        .run();
    });
  }

  private currentUsersIn(tx: Pick<Db, 'select'>): string {
    return tx.select({ u: configTable.currentUsers }).from(configTable).get()?.u ?? '[]';
  }

  /** Account, storage, overlay upper dir and unit file for the row as it is. Idempotent. */
  /**
   * Account, storage and unit file for the row as it is. Idempotent and cheap when nothing
   * changed: the unit file is only rewritten (and systemd reloaded) when its text differs.
   * With `reload: false` the caller reloads once for many services. Returns whether it wrote.
   */
  private async prepareFiles(row: Row, opts: { reload?: boolean; passwd?: string } = {}): Promise<boolean> {
    const id = row.id;
    const uid = row.uid!;
    await ensureAccount(uid, opts.passwd);
    const key = usersKey(this.currentUsers());
    const data = this.layout.dataDirOf(key, id);
    const state = this.layout.stateDirOf(key, id);
    const owner = { uid, gid: uid };
    await mkdir(this.layout.serviceDir(id), { recursive: true });
    // Only the service's own uid may enter its folders, also from the host.
    await Promise.all([ensureOwnedDir(data, owner, 0o700), ensureOwnedDir(state, owner, 0o700)]);
    // storageLimit/stateLimit: the folder is its own small file system, so a full one harms nothing else.
    for (const [dir, limit] of [[data, row.storageLimit], [state, row.stateLimit]] as const) {
      if (!limit) continue;
      await ensureQuotaMount(dir, Math.max(limit, MIN_QUOTA_BYTES), owner);
      await ensureOwnedDir(dir, owner, 0o700); // the mounted file system's root
    }
    const text = renderUnit(await this.unitSpec(row, data, state));
    // Synchronous: a unit file is small, and the FileHandle of fs.promises cost ~15 ms per 200 services at start.
    const current = readTextOrNull(join(this.deps.config.systemd.unitDir, row.unit!));
    if (current === text) return false;
    await this.deps.systemd.writeUnit(row.unit!, text, { reload: opts.reload ?? true });
    return true;
  }

  private async unitSpec(row: Row, dataDir: string, stateDir: string): Promise<UnitSpec> {
    const settings = columnsToSettings(row);
    const image = JSON.parse(row.imageConfig) as ImageConfigJson;
    const env: Record<string, string> = {};
    for (const kv of image.env) {
      const i = kv.indexOf('=');
      if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1);
    }
    Object.assign(env, { SMD_DATA_DIR: '/data', SMD_STATE_FILE: '/state/state' }, settings.env ?? {});
    const { restart, startTimeoutMs } = this.deps.config.systemd;
    const network = this.deps.networking ? await this.deps.networking.ensure(row.id, settings) : null;
    return {
      description: `smd service ${row.id} v${row.version}`,
      command: [...image.entrypoint, ...image.cmd],
      env,
      workingDirectory: image.workingDir || '/',
      user: row.user ?? accountName(row.uid!),
      group: row.user ?? accountName(row.uid!),
      rootDirectory: this.layout.rootDir(row.id),
      bindMounts: [
        { source: dataDir, target: '/data' },
        { source: stateDir, target: '/state' },
      ],
      ...(network ? { networkNamespacePath: network.netnsPath } : {}),
      limits: {
        ...(settings.memoryMax ? { memoryMax: settings.memoryMax } : {}),
        ...(settings.cpuQuota ? { cpuQuota: settings.cpuQuota } : {}),
        ...(settings.tasksMax ? { tasksMax: settings.tasksMax } : {}),
      },
      ...(settings.deviceResources?.length ? { devices: settings.deviceResources } : {}),
      restart,
      startTimeoutSec: Math.ceil(startTimeoutMs / 1000),
    };
  }

  private async mountRoot(row: Row): Promise<void> {
    const key = usersKey(this.currentUsers());
    const lowers = parseLayerList(row.layerList)
      .reverse()
      .map((d) => this.deps.layers.dirFor(d));
    await mountOverlay(this.layout.rootDir(row.id), lowers, this.layout.upperDir(key, row.id, row.version ?? 0), this.layout.workDir(key, row.id, row.version ?? 0));
  }

  // ---- start / stop ----------------------------------------------------------------------

  async start(id: string): Promise<Service> {
    return this.locks.run(id, async () => {
      const row = this.row(id);
      this.setDesired(id, 'running');
      await this.prepareFiles(row);
      await this.startUnit(row);
      return this.get(id);
    });
  }

  async stop(id: string): Promise<Service> {
    return this.locks.run(id, async () => {
      const row = this.row(id);
      this.setDesired(id, 'stopped');
      await this.stopUnit(row);
      await this.releaseMounts(row);
      return this.get(id);
    });
  }

  async restart(id: string): Promise<Service> {
    return this.locks.run(id, async () => {
      const row = this.row(id);
      this.setDesired(id, 'running');
      await this.stopUnit(row).catch(() => {});
      await this.startUnit(row);
      return this.get(id);
    });
  }

  private async startUnit(row: Row): Promise<void> {
    await this.mountRoot(row);
    await this.deps.systemd.resetFailedUnit(row.unit!).catch(() => {});
    try {
      await this.deps.systemd.startUnit(row.unit!);
    } catch (err) {
      this.markState(row.id, STATE.failed, STATUS.error);
      throw startError(row, err);
    }
    this.deps.db.update(services).set({ startat: Date.now() }).where(eq(services.id, row.id)).run();
    this.markState(row.id, STATE.running, STATUS.ok);
  }

  /** Starts and requires the unit to stay active for `settleMs` (a crash loop is a failed start). */
  private async startAndSettle(row: Row): Promise<void> {
    await this.startUnit(row);
    const settleMs = this.deps.config.services.settleMs;
    if (settleMs === 0) return;
    const before = await this.deps.systemd.getUnit(row.unit!);
    // Leave early when the unit leaves `active` during the settle time (keeping how it ended,
    // which a restart would overwrite); else check at its end.
    let left: UnitState | null = null;
    await new Promise<void>((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        this.deps.systemd.off('unit', onUnit);
        resolve();
      };
      const onUnit = (c: { unit: string; state: UnitState }) => {
        if (c.unit === row.unit && c.state.activeState !== 'active' && c.state.activeState !== 'reloading') {
          left = c.state;
          finish();
        }
      };
      const timer = setTimeout(finish, settleMs);
      this.deps.systemd.on('unit', onUnit);
    });
    const after = await this.deps.systemd.getUnit(row.unit!);
    if (left !== null || after.activeState !== 'active' || (after.restarts ?? 0) !== (before.restarts ?? 0)) {
      const first = (left as UnitState | null) ?? after;
      const { activeState, subState } = first;
      // The Unit and Service property signals arrive separately: take how it ended from
      // whichever view already has it.
      const result = first.result && first.result !== 'success' ? first.result : after.result;
      const execMainStatus = first.execMainStatus || after.execMainStatus;
      const { restarts } = after;
      const why = [`${activeState}/${subState}`, result && result !== 'success' && `result ${result}`, execMainStatus !== null && `exit status ${execMainStatus}`, restarts && `${restarts} restarts`].filter(Boolean).join(', ');
      throw new SmError('SYSTEMD', `${row.unit} did not stay active: ${why}`, { unit: row.unit, activeState, subState, result, execMainStatus, restarts });
    }
  }

  private async stopUnit(row: Row): Promise<void> {
    try {
      await this.deps.systemd.stopUnit(row.unit!);
    } catch (err) {
      // A unit systemd does not know (never loaded or already gone) is stopped.
      if (!/NoSuchUnit|not loaded/i.test(JSON.stringify((err as SmError).details ?? {}) + (err as Error).message)) throw err;
    }
    this.markState(row.id, STATE.stopped, STATUS.ok);
  }

  /** The root overlay and the storage quota of the current users, after the unit stopped. */
  private async releaseMounts(row: Row): Promise<void> {
    await unmount(this.layout.rootDir(row.id));
    const key = usersKey(this.currentUsers());
    if (row.storageLimit) await releaseQuotaMount(this.layout.dataDirOf(key, row.id));
    if (row.stateLimit) await releaseQuotaMount(this.layout.stateDirOf(key, row.id));
  }

  private setDesired(id: string, desired: 'running' | 'stopped'): void {
    this.deps.db.update(services).set({ desired, updatedAt: Date.now() }).where(eq(services.id, id)).run();
  }

  // ---- remove ----------------------------------------------------------------------------

  /** True when anything of the service exists: row, unit file or files. */
  private anyTrace(id: string): boolean {
    if (this.deps.db.select({ id: services.id }).from(services).where(eq(services.id, id)).get()) return true;
    return existsSync(join(this.deps.config.systemd.unitDir, unitNameFor(id))) || existsSync(this.layout.serviceDir(id));
  }

  remove(id: string): Operation {
    if (!SERVICE_ID.test(id) || !this.anyTrace(id)) throw notFound(`service ${id}`, { id });
    return this.deps.operations.start({
      kind: 'services.remove',
      target: id,
      inputs: { id },
      work: (op) =>
        this.locks.run(id, async () => {
          op.step('remove');
          await this.purge(id);
          op.step('prune-layers');
          await this.deps.layers.prune();
          return { removed: id };
        }),
    });
  }

  /**
   * Removes every trace of a service, tolerating any part already gone: stop, unit file,
   * mount, rows, files, account. The row goes last but one, so a crash leaves it to retry.
   */
  private async purge(id: string): Promise<void> {
    const row = this.deps.db.select().from(services).where(eq(services.id, id)).get();
    const unit = unitNameFor(id);
    await this.deps.systemd.stopUnit(unit).catch(() => {});
    await this.deps.systemd.resetFailedUnit(unit).catch(() => {});
    await this.deps.systemd.removeUnit(unit);
    await unmount(this.layout.rootDir(id));
    await this.deps.networking?.remove(id);
    // The account goes while the row still names its uid: a crash after this is retried in full.
    if (row?.uid) await removeAccount(row.uid);
    await this.deps.layers.exclusive(async () => {
      this.deps.db.transaction((tx) => {
        tx.delete(usersTable).where(eq(usersTable.serviceid, id)).run();
        tx.delete(services).where(eq(services.id, id)).run();
      });
    });
    await rm(join(this.layout.mountsRoot(), id), { recursive: true, force: true });
    await rm(this.layout.serviceDir(id), { recursive: true, force: true });
    for (const key of await listDir(this.layout.storageRoot())) {
      await removeQuota(this.layout.dataDirOf(key, id)).catch(() => {});
      await removeQuota(this.layout.stateDirOf(key, id)).catch(() => {});
      await rm(this.layout.storageDir(key, id), { recursive: true, force: true });
    }
    this.deps.bus.publish('service', { id, state: STATE.stopped, status: STATUS.ok, reason: 'removed' });
  }

  private async removeVersionFiles(id: string, version: number): Promise<void> {
    for (const key of await listDir(this.layout.storageRoot())) {
      await rm(this.layout.upperDir(key, id, version), { recursive: true, force: true });
      await rm(this.layout.workDir(key, id, version), { recursive: true, force: true });
    }
  }

  // ---- configure -------------------------------------------------------------------------

  async configure(id: string, changes: Settings, expectedRowVersion?: number): Promise<Service> {
    return this.locks.run(id, async () => {
      const row = this.row(id);
      if (expectedRowVersion !== undefined && expectedRowVersion !== row.rowVersion) {
        throw new SmError('CONFLICT', `${id} changed meanwhile (rowVersion ${row.rowVersion}, expected ${expectedRowVersion})`, { rowVersion: row.rowVersion });
      }
      const settings = { ...columnsToSettings(row), ...changes };
      const columns = settingsToColumns(settings);
      const changed = Object.entries(columns).some(([k, v]) => (row as Record<string, unknown>)[k] !== v);
      if (!changed) return this.toService(row);
      this.deps.db
        .update(services)
        .set({ ...columns, updatedAt: Date.now(), rowVersion: row.rowVersion + 1 })
        .where(and(eq(services.id, id), eq(services.rowVersion, row.rowVersion)))
        .run();
      const updated = this.row(id);
      const quotas = [
        { limit: updated.storageLimit, before: row.storageLimit, dir: this.layout.dataDirOf(usersKey(this.currentUsers()), id) },
        { limit: updated.stateLimit, before: row.stateLimit, dir: this.layout.stateDirOf(usersKey(this.currentUsers()), id) },
      ].filter((q) => q.limit && q.limit !== q.before);
      if (quotas.length > 0) {
        // A quota is created or changes size only while the service is stopped (prepareFiles creates it).
        await this.stopUnit(updated);
        await unmount(this.layout.rootDir(id));
        try {
          for (const q of quotas) if (existsSync(quotaImagePath(q.dir))) await resizeQuota(q.dir, Math.max(q.limit!, MIN_QUOTA_BYTES));
          await this.prepareFiles(updated);
        } finally {
          if (this.shouldRun(updated)) await this.startUnit(updated);
        }
      }
      await this.prepareFiles(updated);
      await this.deps.networking?.updateLimits?.(id, columnsToSettings(updated));
      if (this.shouldRun(updated) && needsRestart(row, updated)) await this.deps.systemd.restartUnit(updated.unit!).catch((err: unknown) => this.deps.logger.warn('restart after configure failed', { id, err }));
      return this.get(id);
    });
  }

  // ---- users -----------------------------------------------------------------------------

  /**
   * Switches the device to another set of claims in one operation: services of the previous
   * users stop, services of the new users start with their own storage and upper directory.
   */
  setUsers(claims: string[]): Operation {
    const next = canonicalUsers(claims);
    return this.deps.operations.start({
      kind: 'users.set',
      target: next,
      inputs: { users: JSON.parse(next) as string[] },
      lockKey: 'users',
      work: async (op) => {
        const previous = this.currentUsers();
        const result = { users: JSON.parse(next) as string[], stopped: [] as string[], started: [] as string[], failed: [] as { id: string; error: string }[] };
        if (previous === next) return result;
        op.record({ previous });
        op.step('stop', `services of ${previous}`);
        for (const id of this.attachedTo(previous)) {
          await this.locks.run(id, async () => {
            const row = this.deps.db.select().from(services).where(eq(services.id, id)).get();
            if (!row) return;
            await this.stopUnit(row).catch((err: unknown) => result.failed.push({ id, error: toSmError(err).message }));
            await this.releaseMounts(row);
            result.stopped.push(id);
          });
        }
        const now = Date.now();
        this.deps.db.update(configTable).set({ currentUsers: next, updatedAt: now, rowVersion: sql`${configTable.rowVersion} + 1` }).run();
        this.deps.bus.publish('users', { users: result.users, change: 'switched' });
        op.step('start', `services of ${next}`);
        for (const id of this.attachedTo(next)) {
          await this.locks.run(id, async () => {
            const row = this.deps.db.select().from(services).where(eq(services.id, id)).get();
            if (!row || row.desired !== 'running') return;
            try {
              await this.prepareFiles(row);
              await this.startUnit(row);
              result.started.push(id);
            } catch (err) {
              result.failed.push({ id, error: toSmError(err).message });
            }
          });
        }
        return result;
      },
    });
  }

  usersView(): { users: string[]; services: string[] } {
    const current = this.currentUsers();
    return { users: JSON.parse(current) as string[], services: [...this.attachedTo(current)].sort() };
  }

  // ---- TTL -------------------------------------------------------------------------------

  /** Services not used by the current users whose last start is older than their ttl. */
  expired(now = Date.now()): string[] {
    const current = this.currentUsers();
    const used = new Set(
      this.deps.db
        .select({ id: usersTable.serviceid })
        .from(usersTable)
        .where(eq(usersTable.users, current))
        .all()
        .map((r) => r.id),
    );
    return this.deps.db
      .select()
      .from(services)
      .all()
      .filter((r) => {
        if (used.has(r.id)) return false;
        const ttlDays = r.ttl ?? this.deps.config.services.defaultTtlDays;
        if (ttlDays === 0) return false;
        const last = r.startat ?? r.createdAt;
        return now - last > ttlDays * 86_400_000;
      })
      .map((r) => r.id);
  }

  sweepTtl(): Operation[] {
    return this.expired().map((id) => {
      this.deps.logger.info('service expired (ttl)', { id });
      return this.remove(id);
    });
  }

  // ---- start-up reconciliation -----------------------------------------------------------

  /**
   * After a crash or reboot: finish or undo what interrupted operations left, remove orphans
   * (units, mounts, directories without a row) and start what should run.
   */
  async reconcile(interrupted: Operation[]): Promise<{ rolledBack: string[]; finishedRemovals: string[]; orphans: string[]; started: string[]; failed: string[] }> {
    const report = { rolledBack: [] as string[], finishedRemovals: [] as string[], orphans: [] as string[], started: [] as string[], failed: [] as string[] };
    for (const op of interrupted) {
      const id = typeof op.inputs.id === 'string' ? op.inputs.id : null;
      if (!id) continue;
      if (op.kind === 'services.remove') {
        await this.purge(id);
        report.finishedRemovals.push(id);
      } else if (op.kind === 'services.install') {
        // Undo only what the install recorded it was doing: an update is rolled back to the
        // previous row, a fresh install removed (if its row is its own); an install killed
        // before it changed anything, or an attach, leaves the service as it is.
        const previous = op.inputs.previous as Row | undefined;
        const row = this.deps.db.select().from(services).where(eq(services.id, id)).get();
        if (op.inputs.mode === 'update' && previous) await this.rollback(previous, Number(op.inputs.version));
        else if (op.inputs.mode === 'fresh' && (!row || row.createdAt >= op.createdAt)) await this.purge(id);
        else continue;
        report.rolledBack.push(id);
      }
    }
    const rows = this.deps.db.select().from(services).all();
    const known = new Set(rows.map((r) => r.id));
    const unitDir = this.deps.config.systemd.unitDir;
    for (const file of await listDir(unitDir)) {
      const m = /^smd-(.+)\.service$/.exec(file);
      if (m && !known.has(m[1]!)) {
        await this.purge(m[1]!);
        report.orphans.push(file);
      }
    }
    const mountRoot = this.layout.mountsRoot();
    for (const mp of await mountPoints()) {
      const m = mp.startsWith(mountRoot + '/') ? /^([^/]+)\/root$/.exec(mp.slice(mountRoot.length + 1)) : null;
      if (m && !known.has(m[1]!)) {
        await unmount(mp);
        report.orphans.push(mp);
      }
    }
    for (const name of await listDir(this.layout.servicesRoot())) {
      if (!known.has(name)) {
        await rm(this.layout.serviceDir(name), { recursive: true, force: true });
        report.orphans.push(this.layout.serviceDir(name));
      }
    }
    const attached = this.attachedTo(this.currentUsers());
    // Files of all services at once (their I/O overlaps), then one reload if any unit changed.
    let unitsChanged = false;
    const ready: Row[] = [];
    const passwd = await readFile('/etc/passwd', 'utf8');
    await forEachLimit(rows, 16, async (row) => {
      try {
        unitsChanged = (await this.prepareFiles(row, { reload: false, passwd })) || unitsChanged;
        ready.push(row);
      } catch (err) {
        this.deps.logger.error('could not restore service files', { id: row.id, err });
        report.failed.push(row.id);
      }
    });
    if (unitsChanged) await this.deps.systemd.reload();
    const mounted = new Set(await mountPoints());
    for (const row of ready) {
      try {
        const state = this.deps.systemd.knownUnits().find((u) => u.unit === row.unit);
        if (!this.shouldRun(row, attached)) {
          // E.g. a users.set interrupted between stopping and starting.
          if (state && state.activeState !== 'inactive' && state.activeState !== 'failed') await this.stopUnit(row);
          await unmount(this.layout.rootDir(row.id));
        } else if (state?.activeState === 'active') {
          if (!mounted.has(this.layout.rootDir(row.id))) await this.mountRoot(row);
          this.markState(row.id, STATE.running, STATUS.ok);
        } else {
          await this.startUnit(row);
          report.started.push(row.id);
        }
      } catch (err) {
        this.deps.logger.error('could not restore service', { id: row.id, err });
        report.failed.push(row.id);
      }
    }
    return report;
  }

  /** After systemd came back: start what should run and does not (each under its lock). */
  async resume(): Promise<void> {
    const attached = this.attachedTo(this.currentUsers());
    for (const row of this.deps.db.select().from(services).all()) {
      if (!this.shouldRun(row, attached)) continue;
      const state = this.deps.systemd.knownUnits().find((u) => u.unit === row.unit);
      if (state?.activeState === 'active' || state?.activeState === 'activating') continue;
      await this.locks.run(row.id, () => this.startUnit(this.row(row.id))).catch((err: unknown) => this.deps.logger.warn('could not restart service after resync', { id: row.id, err }));
    }
  }

  // ---- state from systemd ----------------------------------------------------------------

  private onUnitChange(s: UnitState): void {
    const m = /^smd-(.+)\.service$/.exec(s.unit);
    if (!m) return;
    const id = m[1]!;
    const { state, status } = mapUnitState(s);
    this.markState(id, state, status, s);
  }

  private markState(id: string, state: number, status: number, unit?: UnitState): void {
    const res = this.markStateQuery.run({ id, state, status });
    if (res.changes > 0) {
      this.deps.bus.publish('service', {
        id,
        state,
        status,
        ...(unit ? { activeState: unit.activeState, subState: unit.subState, ...(unit.result && unit.result !== 'success' ? { reason: unit.result } : {}) } : {}),
      });
    }
  }

  private row(id: string): Row {
    const row = this.deps.db.select().from(services).where(eq(services.id, id)).get();
    if (!row) throw notFound(`service ${id}`, { id });
    return row;
  }
}

/** Only a real change touches the row (and publishes an event). */

/** systemd's view → state (0 stopped, 1 running, 2 failed) and status (0 ok, 1 error). */
export function mapUnitState(s: Pick<UnitState, 'activeState' | 'subState'>): { state: number; status: number } {
  if (s.activeState === 'failed' || s.subState === 'auto-restart') return { state: STATE.failed, status: STATUS.error };
  if (s.activeState === 'active' || s.activeState === 'reloading' || s.activeState === 'activating') return { state: STATE.running, status: STATUS.ok };
  return { state: STATE.stopped, status: STATUS.ok };
}

function needsRestart(before: Row, after: Row): boolean {
  // Limits systemd applies on the next start; env and devices need a restart too.
  return before.settings !== after.settings || before.deviceResources !== after.deviceResources || before.hostname !== after.hostname;
}

function startError(row: Row, err: unknown): SmError {
  const e = toSmError(err, 'SYSTEMD');
  if (e.code === 'UNAVAILABLE') return e;
  const d = (e.details ?? {}) as { result?: string; execMainStatus?: number; jobResult?: string };
  const why = [d.jobResult && `job ${d.jobResult}`, d.result && `result ${d.result}`, d.execMainStatus !== undefined && d.execMainStatus !== null && `exit status ${d.execMainStatus}`].filter(Boolean).join(', ');
  return new SmError('SYSTEMD', `${row.unit} failed to start${why ? `: ${why}` : `: ${e.message}`}`, { unit: row.unit, ...d });
}

function imageConfigOf(image: ImageInfo): ImageConfigJson {
  return { entrypoint: image.config.entrypoint, cmd: image.config.cmd, env: image.config.env, workingDir: image.config.workingDir };
}

function toService(r: Row): Service {
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
  };
}

/** Runs `fn` over `items` with at most `limit` running at once. */
async function forEachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

function readTextOrNull(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}
