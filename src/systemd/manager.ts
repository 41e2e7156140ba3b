/**
 * The systemd adapter: org.freedesktop.systemd1 over one D-Bus connection.
 *
 * - Three match rules for the life of a connection (PropertiesChanged under the unit path
 *   namespace, JobRemoved, NameOwnerChanged of org.freedesktop.systemd1) and one dispatcher.
 * - Every call has a timeout. Bus loss is noticed from the stream, failed calls and a periodic
 *   ping; then we reconnect with backoff, re-Subscribe and resynchronise the smd units.
 * - A job waiter is registered synchronously when StartUnit's reply is dispatched, before any
 *   later message (such as its JobRemoved) is handled.
 */
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { SmError } from '../errors.js';
import type { Logger } from '../log.js';
import { writeFileAtomic, removeFileDurable } from '../fs/atomic.js';
import { BUS_NAME, BUS_PATH, DbusCallError, DbusConnection, matchRule, unavailable, variantValue, type CallSpec, type DbusSignal } from './dbus.js';
import type { JobOutcome, JobResult, SystemdAdapter, SystemdEvents, SystemdHealth, UnitChange, UnitState, UnitView } from './types.js';

export type { JobOutcome, JobResult, SystemdAdapter, SystemdEvents, SystemdHealth, UnitChange, UnitState, UnitView } from './types.js';

const SD_NAME = 'org.freedesktop.systemd1';
const SD_PATH = '/org/freedesktop/systemd1';
const SD_MANAGER = 'org.freedesktop.systemd1.Manager';
const SD_UNIT = 'org.freedesktop.systemd1.Unit';
const SD_SERVICE = 'org.freedesktop.systemd1.Service';
const PROPS = 'org.freedesktop.DBus.Properties';
const UNIT_PATH_PREFIX = '/org/freedesktop/systemd1/unit/';
const UINT64_MAX = 0xffffffffffffffffn;

export interface SystemdManagerOptions {
  /** 'system', 'session', or a D-Bus address such as `unix:path=/run/user/0/bus`. */
  bus: string;
  /** Directory the unit files are written to (part of the manager's unit search path). */
  unitDir: string;
  logger: Logger;
  /** Bound on every D-Bus call (default 5000 ms). */
  callTimeoutMs?: number;
  /** Bound on Manager.Reload (default 60000 ms). */
  reloadTimeoutMs?: number;
  /** Bound on waiting for a job's JobRemoved (default 10 min; systemd's own timeouts come first). */
  jobTimeoutMs?: number;
  /** Unit name prefix of the units smd owns (default 'smd-'). */
  unitPrefix?: string;
  /** Window in which writers share one Reload (default 15 ms). */
  reloadBatchMs?: number;
  /** Interval of the liveness ping (default 5000 ms). */
  pingIntervalMs?: number;
  /** Reconnect backoff: first delay and cap (default 100 ms, 5000 ms). */
  backoffMs?: { initial: number; max: number };
}

/** `since` comes from StateChangeTimestamp: when the unit last changed its ActiveState. */
type UnitRecord = UnitState;

interface JobWaiter {
  unit: string;
  resolve: (r: { result: JobResult }) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

type BusState = SystemdHealth['bus'];

export class SystemdManager extends EventEmitter<SystemdEvents> implements SystemdAdapter {
  private readonly log: Logger;
  private readonly callTimeoutMs: number;
  private readonly reloadTimeoutMs: number;
  private readonly jobTimeoutMs: number;
  private readonly prefix: string;
  private readonly reloadBatchMs: number;
  private readonly pingIntervalMs: number;
  private readonly backoff: { initial: number; max: number };

  private conn: DbusConnection | null = null;
  private busState: BusState = 'down';
  private managerUp = false;
  private lastError = 'not connected yet';
  private reconnects = 0;
  private everConnected = false;
  private attempt = 0;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private pingTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private attaching: Promise<void> | null = null;

  private readonly units = new Map<string, UnitRecord>();
  private readonly jobs = new Map<string, JobWaiter>();

  private pendingReload: { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } | null = null;
  private reloadOwed = false;

  constructor(private readonly opts: SystemdManagerOptions) {
    super();
    this.log = opts.logger.child({ component: 'systemd' });
    this.callTimeoutMs = opts.callTimeoutMs ?? 5000;
    this.reloadTimeoutMs = opts.reloadTimeoutMs ?? 60_000;
    this.jobTimeoutMs = opts.jobTimeoutMs ?? 600_000;
    this.prefix = opts.unitPrefix ?? 'smd-';
    this.reloadBatchMs = opts.reloadBatchMs ?? 15;
    this.pingIntervalMs = opts.pingIntervalMs ?? 5000;
    this.backoff = opts.backoffMs ?? { initial: 100, max: 5000 };
    this.setMaxListeners(0);
  }

  // ---------------------------------------------------------------- connection lifecycle

  /** Connect once; resolves whether or not the bus is reachable (it then retries in the background). */
  async connect(): Promise<void> {
    if (this.closed) throw new SmError('INTERNAL', 'systemd adapter is closed');
    if (this.conn || this.reconnectTimer) return;
    this.pingTimer = setInterval(() => void this.ping(), this.pingIntervalMs);
    this.pingTimer.unref();
    try {
      await this.establish();
    } catch (err) {
      this.log.warn('systemd bus unavailable, retrying in the background', { error: (err as Error).message });
      this.scheduleReconnect();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.reconnectTimer = this.pingTimer = null;
    this.failJobs(unavailable('systemd adapter closed'));
    if (this.pendingReload) {
      const p = this.pendingReload;
      this.pendingReload = null;
      p.reject(unavailable('systemd adapter closed'));
    }
    const conn = this.conn;
    this.conn = null;
    conn?.close();
    this.setHealth('closed', false, 'closed');
  }

  /** This connection's unique bus name (for diagnostics), null while disconnected. */
  get uniqueName(): string | null {
    return this.conn?.uniqueName ?? null;
  }

  health(): SystemdHealth {
    const ok = this.busState === 'up' && this.managerUp;
    return { ok, detail: ok ? 'connected' : this.lastError, bus: this.busState, manager: this.managerUp, reconnects: this.reconnects };
  }

  private setHealth(bus: BusState, manager: boolean, detail?: string): void {
    const before = this.health();
    this.busState = bus;
    this.managerUp = manager;
    if (detail !== undefined) this.lastError = detail;
    const after = this.health();
    if (before.ok !== after.ok || before.bus !== after.bus || before.manager !== after.manager) {
      this.log.info('systemd health', { ...after });
      this.emit('health', after);
    }
  }

  private busAddress(): string {
    const b = this.opts.bus;
    if (b === 'system') return process.env.DBUS_SYSTEM_BUS_ADDRESS || 'unix:path=/var/run/dbus/system_bus_socket';
    if (b === 'session') {
      const a = process.env.DBUS_SESSION_BUS_ADDRESS;
      if (!a) throw unavailable('DBUS_SESSION_BUS_ADDRESS is not set');
      return a;
    }
    return b;
  }

  private async establish(): Promise<void> {
    this.setHealth('connecting', false);
    let conn: DbusConnection;
    try {
      conn = new DbusConnection(this.busAddress());
      await conn.open(this.callTimeoutMs);
    } catch (err) {
      this.setHealth('down', false, `bus unreachable: ${(err as Error).message}`);
      throw err;
    }
    if (this.closed) {
      conn.close();
      return;
    }
    conn.on('signal', (s) => this.onSignal(conn, s));
    conn.once('close', (err) => this.onLost(conn, err));
    this.conn = conn;
    if (this.everConnected) this.reconnects++;
    this.everConnected = true;
    try {
      const t = { timeoutMs: this.callTimeoutMs };
      await Promise.all([
        conn.addMatch(matchRule({ type: 'signal', sender: SD_NAME, interface: PROPS, member: 'PropertiesChanged', path_namespace: UNIT_PATH_PREFIX.slice(0, -1) }), t.timeoutMs),
        conn.addMatch(matchRule({ type: 'signal', sender: SD_NAME, interface: SD_MANAGER, member: 'JobRemoved' }), t.timeoutMs),
        conn.addMatch(matchRule({ type: 'signal', sender: BUS_NAME, interface: BUS_NAME, member: 'NameOwnerChanged', arg0: SD_NAME }), t.timeoutMs),
      ]);
      let owner = '';
      try {
        const [o] = await conn.call({ destination: BUS_NAME, path: BUS_PATH, interface: BUS_NAME, member: 'GetNameOwner', signature: 's', body: [SD_NAME] }, t);
        owner = String(o);
      } catch (err) {
        if (!(err instanceof DbusCallError)) throw err;
      }
      this.attempt = 0;
      this.setHealth('up', false, owner ? 'attaching to systemd' : 'systemd manager is not on the bus');
      if (owner) await this.attachManager(conn);
    } catch (err) {
      if (this.conn === conn) conn.close();
      throw err;
    }
  }

  /** Subscribe and resync; on a timeout the connection is dropped and rebuilt. */
  private attachManager(conn: DbusConnection): Promise<void> {
    if (this.attaching) return this.attaching;
    const run = async () => {
      try {
        try {
          await conn.call({ destination: SD_NAME, path: SD_PATH, interface: SD_MANAGER, member: 'Subscribe' }, { timeoutMs: this.callTimeoutMs });
        } catch (err) {
          // systemd keeps its subscribers across daemon-reexec/reload: that is success for us.
          if (!(err instanceof DbusCallError && err.name === 'org.freedesktop.systemd1.AlreadySubscribed')) throw err;
        }
        if (this.conn !== conn) return;
        this.setHealth('up', true, 'connected');
        if (this.reloadOwed) await this.reload().catch(() => {});
        await this.resync();
      } catch (err) {
        if (this.conn !== conn) return;
        if (err instanceof DbusCallError && !err.unavailable) {
          this.setHealth('up', false, `systemd refused Subscribe: ${err.message}`);
          return;
        }
        this.log.warn('attaching to systemd failed', { error: (err as Error).message });
        if (err instanceof DbusCallError) {
          this.setHealth('up', false, `systemd manager not reachable: ${err.message}`);
          return; // NameOwnerChanged will tell us when it is back
        }
        conn.close(); // a timeout: start over
      }
    };
    this.attaching = run().finally(() => {
      this.attaching = null;
    });
    return this.attaching;
  }

  private onLost(conn: DbusConnection, err: Error): void {
    if (this.conn !== conn) return;
    this.conn = null;
    this.failJobs(unavailable(`D-Bus connection lost while waiting for the job: ${err.message}`, err));
    if (this.closed) return;
    this.log.warn('systemd bus connection lost', { error: err.message });
    this.setHealth('down', false, `bus connection lost: ${err.message}`);
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer) return;
    const base = Math.min(this.backoff.max, this.backoff.initial * 2 ** this.attempt);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.attempt++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.establish().then(
        () => this.log.info('systemd bus reconnected', { reconnects: this.reconnects }),
        () => this.scheduleReconnect(),
      );
    }, delay);
    this.reconnectTimer.unref();
  }

  /** Cheap liveness check: Peer.Ping to the bus daemon; a timeout drops the connection. */
  private async ping(): Promise<void> {
    const conn = this.conn;
    if (!conn || this.busState !== 'up') return;
    try {
      await conn.call({ destination: BUS_NAME, path: BUS_PATH, interface: 'org.freedesktop.DBus.Peer', member: 'Ping' }, { timeoutMs: this.callTimeoutMs });
    } catch (err) {
      if (this.conn === conn) {
        this.log.warn('bus ping failed, reconnecting', { error: (err as Error).message });
        conn.close();
      }
    }
  }

  private failJobs(err: Error): void {
    for (const [path, w] of this.jobs) {
      clearTimeout(w.timer);
      w.reject(err);
      this.jobs.delete(path);
    }
  }

  // ---------------------------------------------------------------- calls

  private async call(spec: Omit<CallSpec, 'destination'>, opts: { timeoutMs?: number; unit?: string; onReply?: (body: unknown[]) => void } = {}): Promise<unknown[]> {
    const conn = this.conn;
    const what = `${spec.member}${opts.unit ? ` ${opts.unit}` : ''}`;
    if (!conn || this.busState !== 'up') throw unavailable(`systemd ${what}: D-Bus is not connected (${this.lastError})`);
    if (!this.managerUp) throw unavailable(`systemd ${what}: systemd manager is not reachable (${this.lastError})`);
    try {
      return await conn.call({ destination: SD_NAME, ...spec }, { timeoutMs: opts.timeoutMs ?? this.callTimeoutMs, ...(opts.onReply ? { onReply: opts.onReply } : {}) });
    } catch (err) {
      if (err instanceof DbusCallError) {
        if (err.unavailable) throw unavailable(`systemd ${what}: ${err.message}`, err, { dbusError: err.name });
        throw new SmError('SYSTEMD', `systemd ${what}: ${err.message}`, { dbusError: err.name, ...(opts.unit ? { unit: opts.unit } : {}) }, { cause: err });
      }
      if (err instanceof SmError && err.code === 'UNAVAILABLE' && conn === this.conn) void this.ping();
      throw err;
    }
  }

  private managerCall(member: string, signature: string | undefined, body: unknown[], opts: { timeoutMs?: number; unit?: string; onReply?: (body: unknown[]) => void } = {}) {
    return this.call({ path: SD_PATH, interface: SD_MANAGER, member, ...(signature ? { signature, body } : {}) }, opts);
  }

  // ---------------------------------------------------------------- unit files

  private checkOwnName(name: string): void {
    if (!name.startsWith(this.prefix) || !/^[A-Za-z0-9:_.@-]+\.service$/.test(name) || name.length > 250) {
      throw new SmError('INTERNAL', `not an smd unit name: ${JSON.stringify(name)}`, { unit: name });
    }
  }

  async writeUnit(name: string, text: string, opts: { reload?: boolean } = {}): Promise<void> {
    this.checkOwnName(name);
    await writeFileAtomic(join(this.opts.unitDir, name), text);
    this.reloadOwed = true;
    if (opts.reload !== false) await this.reload();
  }

  async removeUnit(name: string, opts: { reload?: boolean } = {}): Promise<boolean> {
    this.checkOwnName(name);
    const existed = await removeFileDurable(join(this.opts.unitDir, name));
    this.units.delete(name);
    if (existed) this.reloadOwed = true;
    if (opts.reload !== false && existed) await this.reload();
    return existed;
  }

  /** Manager.Reload, shared by every caller that asks within the batch window. */
  reload(): Promise<void> {
    if (this.pendingReload) return this.pendingReload.promise;
    let resolve!: () => void;
    let reject!: (e: Error) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const batch = { promise, resolve, reject };
    this.pendingReload = batch;
    setTimeout(() => {
      if (this.pendingReload === batch) this.pendingReload = null;
      else return; // closed meanwhile
      this.reloadOwed = false;
      this.managerCall('Reload', undefined, [], { timeoutMs: this.reloadTimeoutMs }).then(
        () => batch.resolve(),
        (err: Error) => {
          this.reloadOwed = true;
          batch.reject(err);
        },
      );
    }, this.reloadBatchMs);
    return promise;
  }

  // ---------------------------------------------------------------- jobs

  startUnit(name: string): Promise<JobOutcome> {
    return this.runJob('StartUnit', name);
  }

  stopUnit(name: string): Promise<JobOutcome> {
    return this.runJob('StopUnit', name);
  }

  restartUnit(name: string): Promise<JobOutcome> {
    return this.runJob('RestartUnit', name);
  }

  async resetFailedUnit(name: string): Promise<void> {
    checkUnitName(name);
    await this.managerCall('ResetFailedUnit', 's', [name], { unit: name });
    const rec = this.units.get(name);
    if (rec && rec.activeState === 'failed') {
      rec.activeState = 'inactive';
      rec.subState = 'dead';
      rec.result = 'success';
      this.emitChange(rec, 'signal');
    }
  }

  private async runJob(method: 'StartUnit' | 'StopUnit' | 'RestartUnit', name: string): Promise<JobOutcome> {
    checkUnitName(name);
    let jobDone!: Promise<{ result: JobResult }>;
    let jobPath = '';
    // onReply runs synchronously while the reply is dispatched: no later JobRemoved can slip by.
    await this.managerCall(method, 'ss', [name, 'replace'], {
      unit: name,
      onReply: (body) => {
        jobPath = String(body[0]);
        jobDone = new Promise((resolve, reject) => {
          const timer = setTimeout(() => {
            if (this.jobs.delete(jobPath)) reject(unavailable(`systemd ${method} ${name}: job ${jobPath} not finished within ${this.jobTimeoutMs} ms`, undefined, { unit: name }));
          }, this.jobTimeoutMs);
          timer.unref();
          this.jobs.set(jobPath, { unit: name, resolve, reject, timer });
        });
      },
    });
    const { result } = await jobDone;
    let rec = this.units.get(name);
    if (result !== 'done' && result !== 'skipped' && this.isOwn(name) && (!rec || rec.result === null || rec.execMainStatus === null)) {
      // Signals normally arrived before JobRemoved; read the rest if they did not.
      await this.refreshServiceProps(name).catch(() => {});
      rec = this.units.get(name);
    }
    const outcome: JobOutcome = {
      unit: name,
      job: jobPath,
      jobResult: result,
      activeState: rec?.activeState ?? 'unknown',
      subState: rec?.subState ?? 'unknown',
      result: rec?.result ?? null,
      execMainStatus: rec?.execMainStatus ?? null,
    };
    if (result === 'done' || result === 'skipped') return outcome;
    const why = outcome.result && outcome.result !== 'success' ? ` (${outcome.result}${outcome.execMainStatus !== null ? `, status ${outcome.execMainStatus}` : ''})` : '';
    throw new SmError('SYSTEMD', `${method} ${name}: job ${result}${why}`, { ...outcome });
  }

  // ---------------------------------------------------------------- views

  async getUnit(name: string): Promise<UnitView> {
    checkUnitName(name);
    const get = this.propertyGetter(name);
    const [loadState, activeState, subState] = await Promise.all([get(SD_UNIT, 'LoadState'), get(SD_UNIT, 'ActiveState'), get(SD_UNIT, 'SubState')]);
    return this.readView(name, { loadState: str(loadState), activeState: str(activeState) ?? 'inactive', subState: str(subState) ?? 'dead' });
  }

  /** Many views at once: one ListUnitsByNames for the states, then the per-unit numbers. */
  async getUnits(names: readonly string[]): Promise<UnitView[]> {
    if (names.length === 0) return [];
    names.forEach(checkUnitName);
    const [rows] = await this.managerCall('ListUnitsByNames', 'as', [[...names]]);
    const byName = new Map((rows as unknown[][]).map((r) => [String(r[0]), r]));
    return Promise.all(
      names.map((n) => {
        const r = byName.get(n);
        return this.readView(n, { loadState: r ? String(r[2]) : null, activeState: r ? String(r[3]) : 'inactive', subState: r ? String(r[4]) : 'dead' });
      }),
    );
  }

  private propertyGetter(name: string) {
    const path = unitObjectPath(name);
    return (iface: string, prop: string) => this.call({ path, interface: PROPS, member: 'Get', signature: 'ss', body: [iface, prop] }, { unit: name }).then((b) => variantValue(b[0]));
  }

  private async readView(name: string, states: { loadState: string | null; activeState: string; subState: string }): Promise<UnitView> {
    const get = this.propertyGetter(name);
    // Individual Gets, pipelined: measured ~4x cheaper than GetAll of the Service interface (300+ properties).
    const [changed, mainPid, restarts, mem, tasks, result, status, code] = await Promise.all([
      get(SD_UNIT, 'StateChangeTimestamp'),
      get(SD_SERVICE, 'MainPID'),
      get(SD_SERVICE, 'NRestarts'),
      get(SD_SERVICE, 'MemoryCurrent'),
      get(SD_SERVICE, 'TasksCurrent'),
      get(SD_SERVICE, 'Result'),
      get(SD_SERVICE, 'ExecMainStatus'),
      get(SD_SERVICE, 'ExecMainCode'),
    ]);
    const view: UnitView = {
      unit: name,
      ...states,
      result: str(result),
      execMainStatus: num(status),
      execMainCode: num(code),
      mainPid: num(mainPid) || null,
      restarts: num(restarts),
      since: usecToMs(changed),
      memoryCurrent: u64(mem),
      tasksCurrent: u64(tasks),
    };
    // A unit systemd garbage-collected and loaded again for this read has forgotten how it ended.
    const known = this.units.get(name);
    if (known && view.since === null && view.activeState === 'inactive') {
      view.result = known.result;
      view.execMainStatus = known.execMainStatus;
      view.execMainCode = known.execMainCode;
      view.since = known.since;
    }
    return view;
  }

  async listUnits(): Promise<UnitState[]> {
    const [rows] = await this.managerCall('ListUnitsByPatterns', 'asas', [[], [`${this.prefix}*.service`]]);
    return (rows as unknown[][]).map((r) => {
      const rec = this.record(String(r[0]));
      return { ...publicState(rec), loadState: String(r[2]), activeState: String(r[3]), subState: String(r[4]) };
    });
  }

  knownUnits(): UnitState[] {
    return [...this.units.values()].map(publicState);
  }

  /** Re-read every smd unit (one ListUnitsByPatterns) and report what changed while we were away. */
  private async resync(): Promise<void> {
    const listed = await this.listUnits();
    const seen = new Set<string>();
    for (const s of listed) {
      seen.add(s.unit);
      const rec = this.record(s.unit);
      const changed = rec.activeState !== s.activeState || rec.subState !== s.subState;
      rec.loadState = s.loadState;
      rec.activeState = s.activeState;
      rec.subState = s.subState;
      if (s.activeState === 'failed' && (changed || rec.result === null)) await this.refreshServiceProps(s.unit).catch(() => {});
      if (changed) this.emitChange(rec, 'resync');
    }
    for (const rec of this.units.values()) {
      if (seen.has(rec.unit)) continue;
      // Not loaded any more: systemd collected it, so it is inactive.
      if (rec.activeState !== 'inactive' || rec.subState !== 'dead') {
        rec.activeState = 'inactive';
        rec.subState = 'dead';
        rec.mainPid = null;
        this.emitChange(rec, 'resync');
      }
    }
    this.emit('resynced', this.knownUnits());
  }

  private async refreshServiceProps(name: string): Promise<void> {
    const [all] = await this.call({ path: unitObjectPath(name), interface: PROPS, member: 'GetAll', signature: 's', body: [SD_SERVICE] }, { unit: name });
    const rec = this.record(name);
    applyService(rec, all as Record<string, unknown>);
  }

  // ---------------------------------------------------------------- signals

  private isOwn(name: string): boolean {
    return name.startsWith(this.prefix) && name.endsWith('.service');
  }

  private record(name: string): UnitRecord {
    let rec = this.units.get(name);
    if (!rec) {
      rec = { unit: name, loadState: null, activeState: 'inactive', subState: 'dead', result: null, execMainStatus: null, execMainCode: null, mainPid: null, restarts: null, since: null };
      this.units.set(name, rec);
    }
    return rec;
  }

  private emitChange(rec: UnitRecord, cause: UnitChange['cause'], job?: UnitChange['job']): void {
    const change: UnitChange = { unit: rec.unit, state: publicState(rec), cause };
    if (job) change.job = job;
    this.emit('unit', change);
  }

  private onSignal(conn: DbusConnection, s: DbusSignal): void {
    if (this.conn !== conn) return;
    try {
      if (s.member === 'PropertiesChanged' && s.path.startsWith(UNIT_PATH_PREFIX)) {
        const name = unitNameFromPath(s.path);
        if (!name || !this.isOwn(name)) return;
        const [iface, changed] = s.body as [string, Record<string, unknown>];
        const rec = this.record(name);
        if (iface === SD_UNIT) {
          const before = `${rec.activeState}/${rec.subState}`;
          applyUnit(rec, changed);
          if (`${rec.activeState}/${rec.subState}` !== before) this.emitChange(rec, 'signal');
        } else if (iface === SD_SERVICE) {
          applyService(rec, changed);
        }
      } else if (s.member === 'JobRemoved' && s.interface === SD_MANAGER) {
        const [, path, unit, result] = s.body as [number, string, string, JobResult];
        const w = this.jobs.get(path);
        if (w) {
          this.jobs.delete(path);
          clearTimeout(w.timer);
          w.resolve({ result });
        }
        if (this.isOwn(unit) && result !== 'done') this.emitChange(this.record(unit), 'job', { path, result });
      } else if (s.member === 'NameOwnerChanged' && s.body[0] === SD_NAME) {
        const newOwner = String(s.body[2] ?? '');
        if (newOwner) {
          this.log.info('systemd manager appeared on the bus', { owner: newOwner });
          void this.attachManager(conn);
        } else {
          this.log.warn('systemd manager left the bus');
          this.failJobs(unavailable('systemd manager left the bus while waiting for the job'));
          this.setHealth(this.busState, false, 'systemd manager is not on the bus');
        }
      }
    } catch (err) {
      this.log.error('bad systemd signal', { member: s.member, path: s.path, error: (err as Error).message });
    }
  }
}

// ---------------------------------------------------------------- helpers (pure)

function checkUnitName(name: string): void {
  if (!/^[A-Za-z0-9:_.@\\-]+\.[a-z]+$/.test(name) || name.length > 255) throw new SmError('INTERNAL', `invalid unit name ${JSON.stringify(name)}`, { unit: name });
}

/** systemd's bus_label_escape: every byte but [A-Za-z0-9] as _xx. */
export function unitObjectPath(name: string): string {
  let out = '';
  for (const b of Buffer.from(name, 'utf8')) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9]/.test(c) ? c : '_' + b.toString(16).padStart(2, '0');
  }
  return UNIT_PATH_PREFIX + (out || '_');
}

export function unitNameFromPath(path: string): string | null {
  if (!path.startsWith(UNIT_PATH_PREFIX)) return null;
  const label = path.slice(UNIT_PATH_PREFIX.length);
  if (label === '_') return '';
  const bytes: number[] = [];
  for (let i = 0; i < label.length; i++) {
    if (label[i] === '_') {
      const hex = label.slice(i + 1, i + 3);
      if (!/^[0-9a-f]{2}$/.test(hex)) return null;
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else bytes.push(label.charCodeAt(i));
  }
  return Buffer.from(bytes).toString('utf8');
}

/** `t`/`u` values from dbus-next (BigInt or number) to a number; UINT64_MAX ("not set") to null. */
export function u64(v: unknown): number | null {
  const x = variantValue(v);
  if (typeof x === 'bigint') return x === UINT64_MAX ? null : Number(x);
  if (typeof x === 'number') return Number.isFinite(x) ? x : null;
  return null;
}

function num(v: unknown): number | null {
  return u64(v);
}

function str(v: unknown): string | null {
  const x = variantValue(v);
  return typeof x === 'string' ? x : null;
}

/** Realtime µs timestamp to ms; 0 means never. */
export function usecToMs(v: unknown): number | null {
  const n = u64(v);
  return n === null || n === 0 ? null : Math.floor(n / 1000);
}

function applyUnit(rec: UnitRecord, p: Record<string, unknown>): void {
  if ('ActiveState' in p) rec.activeState = str(p.ActiveState) ?? rec.activeState;
  if ('SubState' in p) rec.subState = str(p.SubState) ?? rec.subState;
  if ('LoadState' in p) rec.loadState = str(p.LoadState);
  if ('StateChangeTimestamp' in p) rec.since = usecToMs(p.StateChangeTimestamp) ?? rec.since;
}

function applyService(rec: UnitRecord, p: Record<string, unknown>): void {
  if ('MainPID' in p) rec.mainPid = num(p.MainPID) || null;
  if ('Result' in p) rec.result = str(p.Result);
  if ('ExecMainStatus' in p) rec.execMainStatus = num(p.ExecMainStatus);
  if ('ExecMainCode' in p) rec.execMainCode = num(p.ExecMainCode);
  if ('NRestarts' in p) rec.restarts = num(p.NRestarts);
}

function publicState(r: UnitRecord): UnitState {
  return {
    unit: r.unit,
    loadState: r.loadState,
    activeState: r.activeState,
    subState: r.subState,
    result: r.result,
    execMainStatus: r.execMainStatus,
    execMainCode: r.execMainCode,
    mainPid: r.mainPid,
    restarts: r.restarts,
    since: r.since,
  };
}
