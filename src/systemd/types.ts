/** The systemd adapter as the rest of smd sees it. */

/** How a systemd job ended (JobRemoved's last argument). */
export type JobResult = 'done' | 'canceled' | 'timeout' | 'failed' | 'dependency' | 'skipped' | 'invalid' | 'assert' | 'unsupported' | 'collected' | 'once';

/** What smd knows about one unit, kept current from signals (exit status survives systemd's GC). */
export interface UnitState {
  unit: string;
  loadState: string | null;
  /** active, reloading, inactive, failed, activating, deactivating */
  activeState: string;
  subState: string;
  /** The service's Result= (success, exit-code, signal, timeout, core-dump, watchdog, start-limit-hit, resources, ...). */
  result: string | null;
  /** Exit code, or signal number when execMainCode is 2 (killed) / 3 (dumped). */
  execMainStatus: number | null;
  /** CLD_EXITED=1, CLD_KILLED=2, CLD_DUMPED=3; 0 when nothing exited yet. */
  execMainCode: number | null;
  mainPid: number | null;
  restarts: number | null;
  /** ms since epoch when the unit entered its current active state. */
  since: number | null;
}

/** The live view of a unit, read from systemd on request. */
export interface UnitView extends UnitState {
  memoryCurrent: number | null;
  tasksCurrent: number | null;
}

/**
 * What a monitoring sample needs of a unit that files do not tell: its state (one
 * ListUnitsByNames per sample), and from the state cache (kept by signals, read over D-Bus once
 * per activation) its main PID, restarts and cgroup path.
 */
export interface UnitSample {
  unit: string;
  loadState: string | null;
  activeState: string;
  subState: string;
  mainPid: number | null;
  restarts: number | null;
  /** systemd's ControlGroup (relative to the hierarchy root); null when it has none (not running). */
  controlGroup: string | null;
}

/** The one call a monitoring sample makes. */
export interface UnitSampler {
  sampleUnits(names: readonly string[]): Promise<UnitSample[]>;
}

export type UnitChangeCause = 'signal' | 'job' | 'resync';

export interface UnitChange {
  unit: string;
  state: UnitState;
  cause: UnitChangeCause;
  /** Set when cause is 'job'. */
  job?: { path: string; result: JobResult };
}

export interface JobOutcome {
  unit: string;
  job: string;
  jobResult: JobResult;
  activeState: string;
  subState: string;
  result: string | null;
  execMainStatus: number | null;
}

export interface SystemdHealth {
  ok: boolean;
  detail: string;
  bus: 'connecting' | 'up' | 'down' | 'closed';
  manager: boolean;
  reconnects: number;
}

export interface SystemdEvents {
  unit: [UnitChange];
  health: [SystemdHealth];
  /** After (re)connecting and re-reading all smd units: the daemon may reconcile here. */
  resynced: [UnitState[]];
}

/**
 * Everything the daemon needs from systemd. Errors: SmError UNAVAILABLE when the bus or the
 * manager is not reachable or a call times out; SmError SYSTEMD when systemd refused or a job
 * did not succeed (details: unit, jobResult, result, execMainStatus, dbusError).
 */
export interface SystemdAdapter {
  connect(): Promise<void>;
  close(): Promise<void>;
  health(): SystemdHealth;

  /** Write the unit file atomically and (by default) reload, batched with concurrent writers. */
  writeUnit(name: string, text: string, opts?: { reload?: boolean }): Promise<void>;
  /** Remove the unit file (if present) and reload. Returns whether it existed. */
  removeUnit(name: string, opts?: { reload?: boolean }): Promise<boolean>;
  reload(): Promise<void>;

  /** Resolve when the job is done; reject SmError SYSTEMD when it ended otherwise. */
  startUnit(name: string): Promise<JobOutcome>;
  stopUnit(name: string): Promise<JobOutcome>;
  restartUnit(name: string): Promise<JobOutcome>;
  resetFailedUnit(name: string): Promise<void>;

  getUnit(name: string): Promise<UnitView>;
  getUnits(names: readonly string[]): Promise<UnitView[]>;
  /** One ListUnitsByPatterns call for the smd units systemd has loaded. */
  listUnits(): Promise<UnitState[]>;
  /** The last known state of every smd unit seen (from signals and resyncs), no bus call. */
  knownUnits(): UnitState[];
  /** The last known state of one unit, no bus call. */
  knownUnit(name: string): UnitState | undefined;

  on<K extends keyof SystemdEvents>(event: K, listener: (...args: SystemdEvents[K]) => void): this;
  off<K extends keyof SystemdEvents>(event: K, listener: (...args: SystemdEvents[K]) => void): this;
}
