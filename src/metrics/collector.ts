/**
 * smd's figures as one Prometheus exposition (see README "Metrics" for every name). The text is
 * built from what smd already holds, never from a second registry of the same state:
 * - per service: the monitor's last sample (the same object `monitoring.get` answers);
 * - traffic: the traffic monitor's totals (the same rows `traffic.get` answers), which resume
 *   from the `trafficmonitor` table at start, so the counters carry on across restarts;
 * - alerts: counted from the `alerts` table (persisted, never deleted);
 * - operation outcomes and RPC requests: counted in memory since this process started.
 *
 * `buildExposition` is pure (inputs in, text out) so that it is unit-tested and benchmarked
 * without a daemon; `MetricsCollector` gathers the inputs.
 */
import type Database from 'better-sqlite3';
import type { Db } from '../db/database.js';
import type { MonitoringSnapshot } from '../monitoring/monitor.js';
import type { TrafficRow } from '../traffic/types.js';
import { AlertCounts, type AlertCount } from './alert-counts.js';
import { RPC_BUCKETS, type OperationStats, type RpcMethodStats, type RpcStats } from './counters.js';
import { Exposition } from './exposition.js';

export interface BuildInfo {
  version: string;
  node: string;
  /** ms since the epoch */
  startedAt: number;
}

export interface ExpositionInput {
  build: BuildInfo;
  snapshot: MonitoringSnapshot;
  /** Installed services' versions by id (services table). */
  versions: ReadonlyMap<string, number | null>;
  traffic: readonly TrafficRow[];
  alerts: readonly AlertCount[];
  operations: { finished: readonly { kind: string; state: string; count: number }[]; inProgress: readonly { kind: string; state: string; count: number }[] };
  rpc: readonly [string, RpcMethodStats][];
}

const seconds = (ms: number | null | undefined) => (ms === null || ms === undefined ? null : ms / 1000);
const ACTIVE = new Set(['active', 'reloading', 'deactivating']);

/** The exposition text of these inputs. */
export function buildExposition(input: ExpositionInput): string {
  const x = new Exposition();
  const { snapshot: snap, build } = input;

  x.family('smd_build_info', 'gauge', 'Always 1: the smd version and the Node.js version it runs on.').sample({ version: build.version, node: build.node }, 1);
  x.family('smd_start_time_seconds', 'gauge', 'When this smd process started, seconds since the Unix epoch.').sample(undefined, seconds(build.startedAt));

  // ---- the monitoring sample itself
  x.family('smd_monitoring_last_sample_timestamp_seconds', 'gauge', 'When the last monitoring sample was taken, seconds since the Unix epoch.').sample(undefined, seconds(snap.sampledAt));
  x.family('smd_monitoring_sample_duration_seconds', 'gauge', 'How long the last monitoring sample took (systemd call, cgroups, storage, device).').sample(undefined, seconds(snap.cost.totalMs));
  x.family('smd_monitoring_systemd_duration_seconds', 'gauge', 'How long the one systemd call of the last monitoring sample took.').sample(undefined, seconds(snap.cost.systemdMs));
  x.family('smd_monitoring_sample_interval_seconds', 'gauge', 'The configured time between two monitoring samples.').sample(undefined, seconds(snap.intervalMs));

  // ---- per service, from the last sample
  const info = x.family('smd_service_info', 'gauge', 'Always 1 for each installed service: its version and systemd unit.');
  const active = x.family('smd_service_active', 'gauge', '1 when the service unit is active (running), 0 otherwise.');
  const memory = x.family('smd_service_memory_bytes', 'gauge', 'Memory used by the service unit (systemd MemoryCurrent, else its cgroup), bytes.');
  const cpu = x.family('smd_service_cpu_seconds_total', 'counter', 'CPU time used by the service unit since its cgroup was created (restarts with the unit), seconds.');
  const tasks = x.family('smd_service_tasks', 'gauge', 'Tasks (processes and threads) in the service unit.');
  const restarts = x.family('smd_service_restarts_total', 'counter', 'Automatic restarts of the service unit counted by systemd (NRestarts).');
  const storage = x.family('smd_service_storage_bytes', 'gauge', "Bytes used in the service's storage folder of the current users.");
  const storageLimit = x.family('smd_service_storage_limit_bytes', 'gauge', "The service's storage quota (storageLimit), bytes.");
  const state = x.family('smd_service_state_bytes', 'gauge', "Size of the service's state file of the current users, bytes.");
  const stateLimit = x.family('smd_service_state_limit_bytes', 'gauge', "The service's state file quota (stateLimit), bytes.");
  for (const u of snap.services) {
    const l = { service: u.serviceId };
    const version = input.versions.get(u.serviceId);
    info.sample({ service: u.serviceId, version: version === null || version === undefined ? '' : String(version), unit: u.unit }, 1);
    if (u.activeState !== null) active.sample(l, ACTIVE.has(u.activeState) ? 1 : 0);
    memory.sample(l, u.memory);
    cpu.sample(l, u.cpuUsageNs === null ? null : u.cpuUsageNs / 1e9);
    tasks.sample(l, u.tasks);
    restarts.sample(l, u.restarts ?? null);
    storage.sample(l, u.storage.usedBytes);
    storageLimit.sample(l, u.storage.limitBytes || null);
    state.sample(l, u.state.usedBytes);
    stateLimit.sample(l, u.state.limitBytes || null);
  }

  // ---- traffic, from the traffic monitor (persisted totals)
  const svcTraffic = x.family(
    'smd_service_traffic_bytes_total',
    'counter',
    'Bytes of the service in the current traffic period; direction in = download (to the service), out = upload. Resets when a new period starts; carries on across smd restarts.',
  );
  const svcLimit = x.family('smd_service_traffic_limit_bytes', 'gauge', 'Bytes per traffic period after which the direction is blocked (dlLimit for in, ulLimit for out).');
  const svcBlocked = x.family('smd_service_traffic_blocked', 'gauge', "1 while the direction's traffic is dropped for being over its limit, 0 otherwise.");
  const sysTraffic = x.family('smd_system_traffic_bytes_total', 'counter', 'Bytes of the whole device in the current traffic period (local subnets not counted). Resets when a new period starts.');
  const period = x.family('smd_traffic_period_start_timestamp_seconds', 'gauge', 'Start of the current traffic period (when the traffic counters last reset), seconds since the Unix epoch.');
  let periodStart: number | null = null;
  for (const r of input.traffic) {
    if (periodStart === null || r.periodStart > periodStart) periodStart = r.periodStart;
    if (r.serviceId === null) {
      sysTraffic.sample({ direction: r.direction }, r.bytes);
      continue;
    }
    const l = { service: r.serviceId, direction: r.direction };
    svcTraffic.sample(l, r.bytes);
    svcLimit.sample(l, r.limit);
    svcBlocked.sample(l, r.blocked ? 1 : 0);
  }
  period.sample(undefined, seconds(periodStart));

  // ---- alerts (persisted)
  const alerts = x.family('smd_alerts_total', 'counter', 'Alerts raised, by service (empty for the device), source (monitoring, journal, traffic) and kind.');
  for (const a of input.alerts) alerts.sample({ service: a.serviceId ?? '', source: a.source, kind: a.kind }, a.count);

  // ---- operations (this process)
  const ops = x.family('smd_operations_total', 'counter', 'Operations finished since smd started, by kind and outcome (state succeeded or failed).');
  for (const o of input.operations.finished) ops.sample({ kind: o.kind, state: o.state }, o.count);
  const opsNow = x.family('smd_operations_in_progress', 'gauge', 'Operations pending or running now, by kind and state.');
  for (const o of input.operations.inProgress) opsNow.sample({ kind: o.kind, state: o.state }, o.count);

  // ---- RPC (this process)
  const requests = x.family('smd_rpc_requests_total', 'counter', 'JSON-RPC requests handled since smd started, by method ("other" for unknown or invalid ones) and outcome ("ok" or the error code).');
  const latency = x.family('smd_rpc_request_duration_seconds', 'histogram', 'Time from a parsed JSON-RPC request to its reply, by method, seconds.');
  for (const [method, s] of input.rpc) {
    for (const [outcome, n] of [...s.outcomes.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1))) requests.sample({ method, outcome }, n);
    latency.histogram({ method }, RPC_BUCKETS, s.buckets, s.sumSeconds);
  }
  return x.text();
}

export interface MetricsCollectorOptions {
  db: Db;
  build: BuildInfo;
  snapshot: () => MonitoringSnapshot;
  traffic: () => readonly TrafficRow[];
  operations: OperationStats;
  rpc: RpcStats;
}

/** Gathers the inputs from the live objects and builds the text. */
export class MetricsCollector {
  private readonly alertCounts: AlertCounts;
  private readonly versionsStmt: Database.Statement<[], { id: string; version: number | null }>;

  constructor(private readonly opts: MetricsCollectorOptions) {
    this.alertCounts = new AlertCounts(opts.db);
    this.versionsStmt = opts.db.$client.prepare<[], { id: string; version: number | null }>('SELECT id, version FROM services');
  }

  /** The exposition of `snapshot` (default: the monitor's last sample). */
  text(snapshot: MonitoringSnapshot = this.opts.snapshot()): string {
    const o = this.opts;
    return buildExposition({
      build: o.build,
      snapshot,
      versions: new Map(this.versionsStmt.all().map((r) => [r.id, r.version])),
      traffic: o.traffic(),
      alerts: this.alertCounts.read(),
      operations: { finished: o.operations.finishedCounts(), inProgress: o.operations.inProgress() },
      rpc: o.rpc.entries(),
    });
  }
}
