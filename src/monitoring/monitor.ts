/**
 * Periodic sampling of every service's resource use and of the device, with the services' alert
 * rules evaluated on each sample.
 *
 * One sample = ONE systemd call for all units (`sampleUnits`: one ListUnitsByNames; main PID,
 * restarts and the cgroup path come from the adapter's cache, read over D-Bus once per
 * activation), memory, tasks and CPU from the units' cgroup files (cgroup.ts: resolved once per
 * cgroup path, kept open, one pread per number), the storage folders (statfs for quota mounts, a
 * bounded walk otherwise, at most every `storageIntervalMs`), the state files (one stat each),
 * and /proc/stat, /proc/meminfo and statfs(dataDir) for the device.
 * Samples never overlap: the next one is scheduled when the previous one has finished.
 */
import { statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { eq, sql } from 'drizzle-orm';
import { evaluateRules, rulesFromColumn, type AlertRule, type Metric, type RuleState, type Values } from '../alerts/rules.js';
import type { AlertStore, NewAlert } from '../alerts/store.js';
import type { Db } from '../db/database.js';
import { config as configTable, services, users } from '../db/schema.js';
import { notFound } from '../errors.js';
import { mountPoints } from '../fs/mounts.js';
import { statfsUsage } from '../fs/quota.js';
import type { Logger } from '../log.js';
import type { UnitSample, UnitSampler } from '../systemd/types.js';
import { CgroupReader, readPath, readUnitCgroup, type CgroupLayout, type CgroupPaths, type CgroupUsage } from './cgroup.js';
import { cpuBusyPercent, cpuPercentOfOne, parseMeminfo, parseProcStat, type CpuTimes } from './proc.js';
import { folderUsage, type FolderUsage } from './storage.js';

export interface ServiceUsage {
  serviceId: string;
  unit: string;
  activeState: string | null;
  /** bytes, from the unit's cgroup (see cgroup.ts); null if unknown */
  memory: number | null;
  tasks: number | null;
  /** Automatic restarts counted by systemd (NRestarts); null if unknown. */
  restarts: number | null;
  /** percent of one CPU over the last sample interval (200 = two CPUs busy); null if unknown */
  cpu: number | null;
  /** cumulative CPU time, ns; null if unknown */
  cpuUsageNs: number | null;
  storage: { folder: string | null; usedBytes: number | null; limitBytes: number | null; exact: boolean; source: FolderUsage['source'] };
  state: { file: string | null; usedBytes: number | null; limitBytes: number | null };
  /** bytes in the current traffic period, when a traffic source is wired */
  upload: number | null;
  download: number | null;
  /** Rules that could not be read (bad alertRules JSON), null when fine. */
  rulesError: string | null;
}

export interface DeviceUsage {
  /** percent of all CPUs busy since the previous sample */
  cpu: number | null;
  cpuCount: number | null;
  memory: { totalBytes: number; usedBytes: number; availableBytes: number } | null;
  disk: { path: string; totalBytes: number; usedBytes: number; availableBytes: number } | null;
}

export interface MonitoringSnapshot {
  /** ms since the epoch of the sample, null before the first one */
  sampledAt: number | null;
  intervalMs: number;
  /** What the last sample cost: the systemd call and the whole sample, ms. */
  cost: { systemdMs: number | null; totalMs: number | null; units: number };
  /** Why systemd numbers are missing, when they are. */
  systemdError: string | null;
  device: DeviceUsage;
  services: ServiceUsage[];
}

export interface MonitorOptions {
  db: Db;
  systemd: UnitSampler;
  logger: Logger;
  /** The data directory whose disk is reported. */
  dataDir: string;
  /** Where alerts go; without it rules are evaluated but nothing is stored. */
  alerts?: AlertStore;
  /** Sample interval (default 10 s). */
  intervalMs?: number;
  /** Storage folders are walked at most this often (default max(intervalMs, 60 s)); quota mounts are read every sample. */
  storageIntervalMs?: number;
  /** Entries a storage walk visits at most (default 20000). */
  maxStorageEntries?: number;
  now?: () => number;
  /** The state file of a service's storage (default `<storage folder>/../state`). */
  stateFileOf?: (serviceId: string, storageFolder: string) => string | null;
  /** Upload/download totals of the current traffic period per service (e.g. from the traffic monitor). */
  trafficTotals?: () => ReadonlyMap<string, { upload: number | null; download: number | null }>;
  cgroup?: CgroupPaths & { layout?: CgroupLayout };
  procRoot?: string;
  /**
   * Run after each sample with the new snapshot (e.g. the metrics textfile); awaited, so the next
   * sample and sampleNow() wait for it. What it throws is logged, never fails the sample.
   */
  afterSample?: (snapshot: MonitoringSnapshot) => void | Promise<void>;
}

interface Prev {
  cpuUsageNs: number | null;
  at: number;
}

export class Monitor {
  private readonly intervalMs: number;
  private readonly storageIntervalMs: number;
  private readonly now: () => number;
  private readonly log: Logger;
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private inFlight: Promise<void> | null = null;
  private snapshot: MonitoringSnapshot;
  private prevDeviceCpu: CpuTimes | null = null;
  private readonly prevUnit = new Map<string, Prev>();
  private readonly storageCache = new Map<string, { at: number; usage: FolderUsage }>();
  /** Rule states per service id. */
  private readonly ruleStates = new Map<string, Map<string, RuleState>>();
  private readonly cgroups: CgroupReader;
  private queries: ReturnType<Monitor['prepareQueries']> | null = null;
  /** Parsed alertRules by column text (zod per row per sample was a visible share of a sample). */
  private readonly rulesCache = new Map<string | null, ReturnType<typeof rulesFromColumn>>();

  constructor(private readonly opts: MonitorOptions) {
    this.intervalMs = opts.intervalMs ?? 10_000;
    this.storageIntervalMs = opts.storageIntervalMs ?? Math.max(this.intervalMs, 60_000);
    this.now = opts.now ?? Date.now;
    this.log = opts.logger.child({ component: 'monitoring' });
    this.cgroups = new CgroupReader({ ...opts.cgroup, ...(opts.procRoot ? { procRoot: opts.procRoot } : {}) });
    this.snapshot = { sampledAt: null, intervalMs: this.intervalMs, cost: { systemdMs: null, totalMs: null, units: 0 }, systemdError: null, device: { cpu: null, cpuCount: null, memory: null, disk: null }, services: [] };
  }

  /** Samples now and then every `intervalMs` until stop(). */
  start(): void {
    if (this.running) return;
    this.running = true;
    const loop = async () => {
      await this.sampleNow();
      if (!this.running) return;
      this.timer = setTimeout(() => void loop(), this.intervalMs);
      this.timer.unref();
    };
    void loop();
  }

  /** Stops the timer and waits for a sample in flight. */
  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.inFlight;
    this.cgroups.close();
  }

  /** Takes one sample (joins one already in flight). Never rejects: failures are logged and reported. */
  sampleNow(): Promise<void> {
    if (!this.inFlight) {
      this.inFlight = this.sample()
        .catch((err: unknown) => this.log.error('monitoring sample failed', { error: err }))
        .finally(() => (this.inFlight = null));
    }
    return this.inFlight;
  }

  /** The last sample; with `serviceId` only that service (NOT_FOUND when it is not installed). */
  get(serviceId?: string): MonitoringSnapshot {
    if (serviceId === undefined) return this.snapshot;
    const svc = this.snapshot.services.find((s) => s.serviceId === serviceId);
    if (!svc) {
      const installed = this.opts.db.select({ id: services.id }).from(services).where(eq(services.id, serviceId)).get();
      if (!installed) throw notFound(`service ${serviceId}`, { id: serviceId });
    }
    return { ...this.snapshot, services: svc ? [svc] : [] };
  }

  /** Whether a sample was ever taken (the RPC method samples once before answering if not). */
  get sampled(): boolean {
    return this.snapshot.sampledAt !== null;
  }

  private async sample(): Promise<void> {
    const t0 = performance.now();
    const now = this.now();
    const q = (this.queries ??= this.prepareQueries());
    const rows = q.rows.all();
    const current = q.currentUsers.get()?.u ?? '[]';
    const folders = new Map(q.folders.all({ users: current }).map((r) => [r.id, r.folder]));

    // ONE systemd call for every unit.
    const unitNames = rows.map((r) => r.unit ?? `smd-${r.id}.service`);
    let views: UnitSample[] | null = null;
    let systemdMs: number | null = null;
    let systemdError: string | null = null;
    if (unitNames.length > 0) {
      const s0 = performance.now();
      try {
        views = await this.opts.systemd.sampleUnits(unitNames);
        systemdMs = round(performance.now() - s0);
      } catch (err) {
        systemdError = (err as Error).message;
        this.log.warn('monitoring: systemd unavailable for this sample', { error: systemdError });
      }
    }

    const mounts = folders.size > 0 ? new Set(await mountPoints().catch(() => [] as string[])) : new Set<string>();
    const traffic = this.opts.trafficTotals?.();
    const out: ServiceUsage[] = [];
    const alerts: NewAlert[] = [];
    const seen = new Set<string>();
    const isActive = (v: UnitSample | null) => (v ? v.activeState === 'active' || v.activeState === 'reloading' || v.activeState === 'deactivating' : false);
    // Cgroup files of the active units: synchronous preads of files kept open (cgroup.ts).
    const cgroups: (CgroupUsage | null)[] = new Array<CgroupUsage | null>(rows.length).fill(null);
    for (let i = 0; i < rows.length; i++) {
      const v = views?.[i] ?? null;
      const unit = unitNames[i]!;
      if (!isActive(v)) {
        if (views) this.cgroups.forget(unit);
        continue;
      }
      if (v!.controlGroup) cgroups[i] = this.cgroups.read(unit, v!.controlGroup);
      else cgroups[i] = await readUnitCgroup(unit, v!.mainPid, { ...this.opts.cgroup, ...(this.opts.procRoot ? { procRoot: this.opts.procRoot } : {}) });
    }
    for (const [i, row] of rows.entries()) {
      seen.add(row.id);
      const unit = unitNames[i]!;
      const view = views?.[i] ?? null;
      const active = isActive(view);
      const cg = cgroups[i] ?? null;
      const prev = this.prevUnit.get(row.id);
      const cpuUsageNs = cg?.cpuUsageNs ?? null;
      const cpu = prev && cpuUsageNs !== null ? cpuPercentOfOne(prev.cpuUsageNs, cpuUsageNs, now - prev.at) : null;
      this.prevUnit.set(row.id, { cpuUsageNs, at: now });

      const folder = folders.get(row.id) ?? null;
      const storage = folder ? await this.storageOf(row.id, folder, mounts, now) : null;
      const stateFile = folder ? (this.opts.stateFileOf ?? defaultStateFile)(row.id, folder) : null;
      const stateBytes = stateFile ? (statSync(stateFile, { throwIfNoEntry: false })?.size ?? null) : null;
      const t = traffic?.get(row.id);
      let parsed = this.rulesCache.get(row.alertRules);
      if (!parsed) this.rulesCache.set(row.alertRules, (parsed = rulesFromColumn(row.alertRules)));
      const { rules, error } = parsed;
      const usage: ServiceUsage = {
        serviceId: row.id,
        unit,
        activeState: view?.activeState ?? null,
        memory: active ? (cg?.memoryBytes ?? null) : view ? 0 : null,
        tasks: active ? (cg?.tasks ?? null) : view ? 0 : null,
        restarts: view?.restarts ?? null,
        cpu: active ? cpu : view ? 0 : null,
        cpuUsageNs,
        storage: { folder, usedBytes: storage?.usedBytes ?? null, limitBytes: row.storageLimit, exact: storage?.exact ?? true, source: storage?.source ?? 'none' },
        state: { file: stateFile, usedBytes: stateBytes, limitBytes: row.stateLimit },
        upload: t?.upload ?? null,
        download: t?.download ?? null,
        rulesError: error,
      };
      out.push(usage);
      alerts.push(...this.evaluate(row.id, rules, usage, now));
    }
    if (this.rulesCache.size > 2 * rows.length + 16) this.rulesCache.clear(); // bounded: texts no row has any more
    for (const id of [...this.prevUnit.keys()]) if (!seen.has(id)) this.prevUnit.delete(id);
    for (const id of [...this.ruleStates.keys()]) if (!seen.has(id)) this.ruleStates.delete(id);
    for (const id of [...this.storageCache.keys()]) if (!seen.has(id)) this.storageCache.delete(id);
    const units = new Set(unitNames);
    for (const unit of this.cgroups.openUnits()) if (!units.has(unit)) this.cgroups.forget(unit);

    const device = await this.device();
    this.snapshot = { sampledAt: now, intervalMs: this.intervalMs, cost: { systemdMs, totalMs: round(performance.now() - t0), units: unitNames.length }, systemdError, device, services: out };
    if (alerts.length > 0 && this.opts.alerts) this.opts.alerts.add(alerts);
    if (this.opts.afterSample) {
      try {
        await this.opts.afterSample(this.snapshot);
      } catch (err) {
        this.log.error('after-sample hook failed', { error: err });
      }
    }
  }

  /** The sample's reads, prepared once (drizzle re-builds an unprepared query on every call). */
  private prepareQueries() {
    const db = this.opts.db;
    return {
      rows: db.select({ id: services.id, unit: services.unit, alertRules: services.alertRules, storageLimit: services.storageLimit, stateLimit: services.stateLimit }).from(services).prepare(),
      currentUsers: db.select({ u: configTable.currentUsers }).from(configTable).prepare(),
      folders: db
        .select({ id: users.serviceid, folder: users.storageFolder })
        .from(users)
        .where(eq(users.users, sql.placeholder('users')))
        .prepare(),
    };
  }

  private evaluate(serviceId: string, rules: AlertRule[], u: ServiceUsage, now: number): NewAlert[] {
    let states = this.ruleStates.get(serviceId);
    if (!states) this.ruleStates.set(serviceId, (states = new Map()));
    const values: Values = { memory: u.memory, cpu: u.cpu, storage: u.storage.usedBytes, state: u.state.usedBytes, upload: u.upload, download: u.download };
    return evaluateRules(rules, values, now, states).map((f) => ({
      time: now,
      source: 'monitoring' as const,
      serviceId,
      kind: `rule.${f.rule.metric}`,
      message: `${serviceId}: ${f.rule.metric} ${formatValue(f.rule.metric, f.value)} above ${formatValue(f.rule.metric, f.rule.above)}${f.rule.forMs > 0 ? ` for ${Math.round(f.durationMs / 1000)} s` : ''}`,
      payload: { rule: f.rule, value: f.value, durationMs: f.durationMs },
    }));
  }

  private async storageOf(id: string, folder: string, mounts: ReadonlySet<string>, now: number): Promise<FolderUsage> {
    if (mounts.has(folder)) return folderUsage(folder, { mountPoints: mounts }); // statfs: cheap, every sample
    const cached = this.storageCache.get(id);
    if (cached && now - cached.at < this.storageIntervalMs) return cached.usage;
    const usage = await folderUsage(folder, { mountPoints: mounts, ...(this.opts.maxStorageEntries ? { maxEntries: this.opts.maxStorageEntries } : {}) });
    this.storageCache.set(id, { at: now, usage });
    return usage;
  }

  private async device(): Promise<DeviceUsage> {
    const proc = this.opts.procRoot ?? '/proc';
    // Small in-kernel files: one synchronous read each beats a thread-pool round trip.
    const statText = readPath(join(proc, 'stat'));
    const memText = readPath(join(proc, 'meminfo'));
    const disk = await statfsUsage(this.opts.dataDir).catch(() => null);
    const times = statText ? parseProcStat(statText) : null;
    // Two samples within one clock tick (10 ms) read the same counters: keep the older reading as
    // the base and report the last sample's figure, not a null, until the counters advance.
    const noTick = times !== null && this.prevDeviceCpu !== null && times.total === this.prevDeviceCpu.total;
    const cpu = noTick ? this.snapshot.device.cpu : cpuBusyPercent(this.prevDeviceCpu, times);
    if (!noTick) this.prevDeviceCpu = times;
    const cpuCount = statText ? statText.split('\n').filter((l) => /^cpu\d+ /.test(l)).length || null : null;
    return {
      cpu,
      cpuCount,
      memory: memText ? parseMeminfo(memText) : null,
      disk: disk ? { path: this.opts.dataDir, totalBytes: disk.totalBytes, usedBytes: disk.usedBytes, availableBytes: disk.availableBytes } : null,
    };
  }
}

function defaultStateFile(_id: string, storageFolder: string): string {
  return join(dirname(storageFolder), 'state');
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

function formatValue(metric: Metric, v: number): string {
  if (metric === 'cpu') return `${v}%`;
  return `${v} bytes`;
}
