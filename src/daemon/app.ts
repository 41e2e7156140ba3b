import { mkdirSync, accessSync, constants, readFileSync, existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../config/config.js';
import { openDatabase, type OpenedDatabase } from '../db/database.js';
import { SmError } from '../errors.js';
import { EventBus } from '../events/bus.js';
import type { Logger } from '../log.js';
import { layerMethods } from '../layers/methods.js';
import { LayerStore } from '../layers/store.js';
import { ImageSources } from '../images/sources.js';
import { loadTrust } from '../trust/policy.js';
import { operationMethods } from '../operations/methods.js';
import { readUnitLog } from '../journal/logs.js';
import { HostSystem } from '../services/host.js';
import { ServiceManager } from '../services/manager.js';
import { serviceMethods } from '../services/methods.js';
import { StateApplier } from '../state/apply.js';
import { stateMethods } from '../state/methods.js';
import { DesiredStateStore } from '../state/store.js';
import { SystemdManager } from '../systemd/manager.js';
import { userMethods } from '../users/methods.js';
import { StateTracker } from '../users/state.js';
import { AlertStore } from '../alerts/store.js';
import { alertMethods } from '../alerts/methods.js';
import { JournalAlerts } from '../journal/alerts.js';
import { Monitor } from '../monitoring/monitor.js';
import { monitoringMethods } from '../monitoring/methods.js';
import { MetricsCollector } from '../metrics/collector.js';
import { OperationStats, RpcStats } from '../metrics/counters.js';
import { metricsMethods } from '../metrics/methods.js';
import { TextfileWriter } from '../metrics/textfile.js';
import { NetworkManager } from '../net/network.js';
import { TrafficMonitor } from '../traffic/monitor.js';
import { trafficMethods } from '../traffic/methods.js';
import { ServiceNetworks, trafficTotals } from '../traffic/networking.js';
import type { ServiceNetworking } from '../services/manager.js';
import { Operations, type Operation } from '../operations/operations.js';
import { Dispatcher } from '../rpc/dispatcher.js';
import { MethodRegistry } from '../rpc/registry.js';
import { RpcServer } from '../rpc/server.js';
import { subscriptionMethods } from '../rpc/subscriptions.js';
import { ServiceRestorer } from './restore.js';
import { programsCheck } from '../system/programs.js';
import { Health } from '../system/health.js';
import { systemMethods } from '../system/methods.js';
import type { FleetBridge } from '../fleet/bridge.js';
import { fleetMethods } from '../fleet/methods.js';
import { createFleetBridge, readFleetFiles } from '../fleet/start.js';

export const PACKAGE_VERSION: string = (
  JSON.parse(readFileSync(resolve(dirname(fileURLToPath(import.meta.url)), '../../package.json'), 'utf8')) as { version: string }
).version;

/**
 * The composition root: builds every object in start order and passes dependencies
 * through constructors. Nothing else in smd creates long-lived objects.
 */
export class Daemon {
  readonly bus: EventBus;
  readonly registry = new MethodRegistry();
  readonly health = new Health();
  readonly startedAt = Date.now();
  database!: OpenedDatabase;
  operations!: Operations;
  layers!: LayerStore;
  sources!: ImageSources;
  systemd!: SystemdManager;
  services!: ServiceManager;
  network: NetworkManager | null = null;
  traffic: TrafficMonitor | null = null;
  alerts!: AlertStore;
  monitor!: Monitor;
  journalAlerts!: JournalAlerts;
  metrics!: MetricsCollector;
  /** RPC requests and operation outcomes of this process, for the metrics. */
  readonly rpcStats = new RpcStats();
  readonly operationStats = new OperationStats();
  state!: StateTracker;
  desired!: StateApplier;
  fleet: FleetBridge | null = null;
  private servers: RpcServer[] = [];
  private restorer: ServiceRestorer | null = null;
  private stopping: Promise<void> | null = null;

  constructor(
    readonly config: Config,
    readonly logger: Logger,
  ) {
    this.bus = new EventBus(logger.child({ module: 'events' }));
  }

  /** Everything up to accepting requests; READY=1 may be sent once this resolves. */
  async start(): Promise<void> {
    const { config, logger } = this;
    ensureWritableDir(config.dataDir, 'dataDir');
    ensureWritableDir(config.runDir, 'runDir');
    ensureWritableDir(dirname(config.database.path), 'database.path');
    // Before anything else: a key file that is missing or unusable stops the start, naming it.
    const trust = loadTrust(config.images.trust);
    const fleetConfig = config.fleet?.enabled ? config.fleet : null;
    const fleetFiles = fleetConfig ? readFleetFiles(fleetConfig) : null;

    this.database = openDatabase(config.database.path);
    this.health.register('db', () => {
      const ok = this.database.sqlite.prepare('SELECT 1 AS one').get() as { one: number } | undefined;
      return { ok: ok?.one === 1, detail: `schema version ${this.database.schemaVersion}` };
    });

    this.operationStats.listen(this.bus); // before failInterrupted: those count as failed operations
    this.operations = new Operations(this.database.db, this.bus, logger.child({ module: 'operations' }), process.env.SMD_CRASH_AT ?? null);
    const interrupted = this.operations.failInterrupted();
    if (interrupted.length > 0) logger.warn('operations interrupted by the previous stop were marked failed', { ids: interrupted.map((o) => o.id) });

    this.layers = new LayerStore(this.database.db, config.dataDir, config.images, logger.child({ module: 'layers' }));
    await this.layers.reconcile();
    this.sources = new ImageSources({
      dataDir: config.dataDir,
      limits: config.images,
      reserveBytes: config.images.reserveBytes,
      hasLayer: (d) => this.layers.has(d),
      logger: logger.child({ module: 'images' }),
      downloads: config.images,
      registries: config.registries,
      trust,
    });
    logger.info('image trust policy', { ...trust.summary() });
    await this.sources.reconcile();

    this.systemd = new SystemdManager({ bus: config.systemd.bus, unitDir: config.systemd.unitDir, logger: logger.child({ module: 'systemd' }), callTimeoutMs: config.systemd.callTimeoutMs });
    this.health.register('systemd', () => {
      const h = this.systemd.health();
      return { ok: h.ok, detail: h.ok && h.reconnects > 0 ? `${h.detail} (reconnected ${h.reconnects} times)` : h.detail, reconnects: h.reconnects };
    });
    this.alerts = new AlertStore({ db: this.database.db, bus: this.bus });
    this.journalAlerts = new JournalAlerts({ db: this.database.db, alerts: this.alerts, logger: logger.child({ module: 'journal' }), alertPriority: config.journal.alertPriority });
    this.health.register('programs', () => programsCheck());
    this.health.register('journal', () => (existsSync(JOURNAL_SOCKET) ? this.journalAlerts.health() : { ok: false, detail: `${JOURNAL_SOCKET} is missing: is systemd-journald running?` }));
    const networking = await this.startTraffic();
    await this.systemd.connect();
    this.services = new ServiceManager({
      db: this.database.db,
      config,
      systemd: this.systemd,
      layers: this.layers,
      sources: this.sources,
      operations: this.operations,
      bus: this.bus,
      logger: logger.child({ module: 'services' }),
      host: new HostSystem(),
      readLog: readUnitLog,
      ...(networking ? { networking } : {}),
    });
    this.state = new StateTracker({ db: this.database.db, bus: this.bus, logger: logger.child({ module: 'state' }), layout: this.services.layout, currentUsers: () => this.services.currentUsers() });
    this.desired = new StateApplier({
      services: this.services,
      layers: this.layers,
      sources: this.sources,
      operations: this.operations,
      store: new DesiredStateStore(this.database.db),
      logger: logger.child({ module: 'desired-state' }),
    });
    await this.restoreServices(interrupted);
    const settled = this.desired.settleInterrupted(interrupted);
    if (settled.length > 0) logger.warn('desired-state applies interrupted by the previous stop were finished or rolled back', { ids: settled });
    if (this.network && this.traffic) {
      const live = new Set(this.services.list().map((s) => s.id));
      await this.network.reconcile(live);
      await this.traffic.reconcile(live);
    }
    const textfile = config.metrics.textfile ? new TextfileWriter(config.metrics.textfile, logger.child({ module: 'metrics' })) : null;
    this.monitor = new Monitor({
      db: this.database.db,
      systemd: this.systemd,
      logger: logger.child({ module: 'monitoring' }),
      dataDir: config.dataDir,
      alerts: this.alerts,
      // The state folder sits beside the storage folder (see ServiceLayout).
      stateFileOf: (_id, storageFolder) => join(dirname(storageFolder), 'state', 'state'),
      ...(this.traffic ? { trafficTotals: () => trafficTotals(this.traffic!) } : {}),
      // Only with metrics.textfile set: without it a sample does nothing more than before.
      ...(textfile ? { afterSample: (snapshot) => textfile.write(this.metrics.text(snapshot)) } : {}),
    });
    this.metrics = new MetricsCollector({
      db: this.database.db,
      build: { version: PACKAGE_VERSION, node: process.version, startedAt: this.startedAt },
      snapshot: () => this.monitor.get(),
      traffic: () => this.traffic?.get() ?? [],
      operations: this.operationStats,
      rpc: this.rpcStats,
    });

    this.registry.add(
      ...systemMethods(this.database, this.bus, this.health, { name: 'smd', version: PACKAGE_VERSION, startedAt: this.startedAt, trust: () => this.sources.trust.summary() }, this.registry),
      ...operationMethods(this.operations),
      ...layerMethods(this.layers, this.sources, this.operations),
      ...serviceMethods(this.services, this.operations),
      ...userMethods(this.services, this.operations),
      ...stateMethods(this.desired, this.operations),
      ...alertMethods(this.alerts),
      ...monitoringMethods(this.monitor),
      ...metricsMethods({ sampleNow: () => this.monitor.sampleNow(), sampled: () => this.monitor.sampled, sampledAt: () => this.monitor.get().sampledAt, text: () => this.metrics.text() }),
      ...trafficMethods(this.traffic ?? { get: () => [] }),
      ...subscriptionMethods(this.bus),
      ...fleetMethods(() => this.fleet),
    );

    const dispatcher = new Dispatcher(this.registry, logger.child({ module: 'rpc' }), { maxBatch: config.rpc.maxBatch, observe: (m, outcome, s) => this.rpcStats.observe(m, outcome, s) });
    const common = { maxRequestBytes: config.rpc.maxRequestBytes };
    this.servers = [
      new RpcServer(dispatcher, logger, { ...common, path: config.socket, readOnly: false, mode: 0o660 }),
      new RpcServer(dispatcher, logger, { ...common, path: config.readOnlySocket, readOnly: true, mode: 0o666 }),
    ];
    for (const server of this.servers) await server.listen();
    // The fleet bridge (SPEC 14) talks to the rest only through the dispatcher and the bus.
    this.health.register('fleet', () => (this.fleet ? this.fleet.health() : { ok: true, detail: 'disabled in the configuration' }));
    if (fleetConfig && fleetFiles) {
      this.fleet = await createFleetBridge({ config: fleetConfig, files: fleetFiles, db: this.database.db, rpc: dispatcher, bus: this.bus, logger: logger.child({ module: 'fleet' }), maxRpcBytes: config.rpc.maxRequestBytes });
      await this.fleet.start();
    }
    logger.info('smd started', { socket: config.socket, readOnlySocket: config.readOnlySocket, database: config.database.path });
  }

  /**
   * Per-service networks and traffic accounting, when enabled (traffic/networking.ts). Without
   * iptables (missing or failing) traffic is reported unhealthy and services still install and run.
   */
  private async startTraffic(): Promise<ServiceNetworking | null> {
    const { config, logger } = this;
    if (!config.traffic.enabled) {
      this.health.register('traffic', () => ({ ok: true, detail: 'disabled in the configuration' }));
      return null;
    }
    const network = new NetworkManager({ db: this.database.db, config: config.traffic, logger: logger.child({ module: 'net' }) });
    const traffic = new TrafficMonitor({ db: this.database.db, bus: this.bus, alerts: this.alerts, config: config.traffic, logger: logger.child({ module: 'traffic' }) });
    this.network = network;
    this.traffic = traffic;
    const networks = new ServiceNetworks({ network, traffic, logger });
    this.health.register('traffic', () => networks.health());
    await networks.start();
    return networks;
  }

  private async restoreServices(interrupted: Operation[]): Promise<void> {
    this.restorer = new ServiceRestorer({ services: this.services, systemd: this.systemd, operations: this.operations, logger: this.logger });
    await this.restorer.start(interrupted);
  }

  /**
   * What readiness does not wait for, started once READY=1 was sent: the monitor, whose first
   * sample asks systemd about every unit, and the journal follower (two journalctl processes;
   * its health says how it goes).
   */
  startBackgroundWork(): void {
    this.monitor.start();
    this.journalAlerts.start().catch((err: unknown) => this.logger.error('journal alerts did not start', { err }));
  }

  /** One line for systemd's STATUS=. */
  statusLine(): string {
    const running = this.operations.list({ state: 'running' }).length;
    const clients = this.servers.reduce((n, s) => n + s.connectionCount, 0);
    const svc = this.services.list();
    const up = svc.filter((s) => s.state === 1).length;
    return `serving; ${up}/${svc.length} services running; ${running} operations running; ${clients} clients`;
  }

  /** Orderly shutdown: stop accepting, let running work settle (bounded), close the database. */
  stop(graceMs = 10_000): Promise<void> {
    this.stopping ??= (async () => {
      this.restorer?.stop();
      this.fleet?.quiesce();
      await Promise.all(this.servers.map((s) => s.close()));
      await this.monitor?.stop();
      await this.journalAlerts?.stop();
      await this.traffic?.stop();
      if (this.operations) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([this.operations.drain(), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
        clearTimeout(timer);
      }
      this.operationStats.close();
      await this.fleet?.stop();
      this.state?.close();
      this.services?.close();
      await this.systemd?.close();
      await this.sources?.close();
      this.database?.close();
      this.logger.info('smd stopped');
    })();
    return this.stopping;
  }
}

const JOURNAL_SOCKET = '/run/systemd/journal/socket';

/** Creates the directory if needed and proves it is writable, or stops with a one-line reason. */
function ensureWritableDir(dir: string, key: string): void {
  try {
    mkdirSync(dir, { recursive: true });
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (err) {
    throw new SmError('INTERNAL', `${key} ${dir} is not a writable directory: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { key, dir });
  }
}
