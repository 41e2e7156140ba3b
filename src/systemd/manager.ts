/**
 * The systemd adapter: org.freedesktop.systemd1 over one D-Bus connection. This file puts the
 * three parts together behind `SystemdAdapter`:
 *
 * - connection.ts: the connection, health, ping, reconnect with backoff, Subscribe;
 * - jobs.ts: start/stop/restart jobs and their waiters, reset-failed, unit files, batched Reload;
 * - units.ts: the live view, the state cache fed by signals, the resync after (re)attaching.
 *
 * D-Bus errors become SmError codes at the border (errors.ts); the pure helpers are in props.ts.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from '../log.js';
import { SystemdLink } from './connection.js';
import { unavailable, type DbusSignal } from './dbus.js';
import { UnitJobs } from './jobs.js';
import { SD_MANAGER } from './props.js';
import type { JobOutcome, JobResult, SystemdAdapter, SystemdEvents, SystemdHealth, UnitSample, UnitSampler, UnitState, UnitView } from './types.js';
import { UnitCache } from './units.js';

export type { JobOutcome, JobResult, SystemdAdapter, SystemdEvents, SystemdHealth, UnitChange, UnitSample, UnitSampler, UnitState, UnitView } from './types.js';
export { unitObjectPath, unitNameFromPath, u64, usecToMs } from './props.js';

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

export class SystemdManager extends EventEmitter<SystemdEvents> implements SystemdAdapter, UnitSampler {
  private readonly log: Logger;
  private readonly link: SystemdLink;
  private readonly units: UnitCache;
  private readonly jobs: UnitJobs;

  constructor(opts: SystemdManagerOptions) {
    super();
    this.setMaxListeners(0);
    this.log = opts.logger.child({ component: 'systemd' });
    const prefix = opts.unitPrefix ?? 'smd-';
    this.link = new SystemdLink(
      { bus: opts.bus, logger: this.log, callTimeoutMs: opts.callTimeoutMs ?? 5000, pingIntervalMs: opts.pingIntervalMs ?? 5000, backoffMs: opts.backoffMs ?? { initial: 100, max: 5000 } },
      {
        attached: () => this.attached(),
        lost: (err) => this.jobs.failAll(err),
        signal: (s) => this.onSignal(s),
        health: (h) => this.emit('health', h),
      },
    );
    this.units = new UnitCache({
      link: this.link,
      logger: this.log,
      prefix,
      onChange: (c) => this.emit('unit', c),
      onResynced: (u) => this.emit('resynced', u),
    });
    this.jobs = new UnitJobs({
      link: this.link,
      units: this.units,
      unitDir: opts.unitDir,
      prefix,
      reloadTimeoutMs: opts.reloadTimeoutMs ?? 60_000,
      jobTimeoutMs: opts.jobTimeoutMs ?? 600_000,
      reloadBatchMs: opts.reloadBatchMs ?? 15,
    });
  }

  /** Connect once; resolves whether or not the bus is reachable (it then retries in the background). */
  connect(): Promise<void> {
    return this.link.connect();
  }

  async close(): Promise<void> {
    this.link.close();
    this.jobs.close(unavailable('systemd adapter closed'));
    this.link.drop();
  }

  /** This connection's unique bus name (for diagnostics), null while disconnected. */
  get uniqueName(): string | null {
    return this.link.uniqueName;
  }

  health(): SystemdHealth {
    return this.link.health();
  }

  writeUnit(name: string, text: string, opts: { reload?: boolean } = {}): Promise<void> {
    return this.jobs.writeUnit(name, text, opts);
  }

  removeUnit(name: string, opts: { reload?: boolean } = {}): Promise<boolean> {
    return this.jobs.removeUnit(name, opts);
  }

  /** Manager.Reload, shared by every caller that asks within the batch window. */
  reload(): Promise<void> {
    return this.jobs.reload();
  }

  startUnit(name: string): Promise<JobOutcome> {
    return this.jobs.runJob('StartUnit', name);
  }

  stopUnit(name: string): Promise<JobOutcome> {
    return this.jobs.runJob('StopUnit', name);
  }

  restartUnit(name: string): Promise<JobOutcome> {
    return this.jobs.runJob('RestartUnit', name);
  }

  resetFailedUnit(name: string): Promise<void> {
    return this.jobs.resetFailedUnit(name);
  }

  getUnit(name: string): Promise<UnitView> {
    return this.units.getUnit(name);
  }

  /** Many views at once: one ListUnitsByNames for the states, then the per-unit numbers. */
  getUnits(names: readonly string[]): Promise<UnitView[]> {
    return this.units.getUnits(names);
  }

  /** The monitoring view: one ListUnitsByNames; per-unit reads only once per activation (units.ts). */
  sampleUnits(names: readonly string[]): Promise<UnitSample[]> {
    return this.units.sampleUnits(names);
  }

  listUnits(): Promise<UnitState[]> {
    return this.units.listUnits();
  }

  knownUnits(): UnitState[] {
    return this.units.knownUnits();
  }

  /** One unit's last known state (a lookup: reconciliation asks it for each of 200 services). */
  knownUnit(name: string): UnitState | undefined {
    return this.units.knownUnit(name);
  }

  /** After Subscribe: the reload a writer still owes, then re-read every smd unit. */
  private async attached(): Promise<void> {
    // A failed reload stays owed (reloadOwed) and is retried by the next writer or attach.
    if (this.jobs.reloadOwed) await this.jobs.reload().catch((err: unknown) => this.log.warn('owed reload after attaching failed', { err }));
    await this.units.resync();
  }

  private onSignal(s: DbusSignal): void {
    if (s.member === 'PropertiesChanged') this.units.onPropertiesChanged(s);
    else if (s.member === 'JobRemoved' && s.interface === SD_MANAGER) {
      const [, path, unit, result] = s.body as [number, string, string, JobResult];
      this.jobs.onJobRemoved(path, unit, result);
    }
  }
}
