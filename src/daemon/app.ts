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
import { operationMethods } from '../operations/methods.js';
import { ServiceManager } from '../services/manager.js';
import { serviceMethods } from '../services/methods.js';
import { SystemdManager } from '../systemd/manager.js';
import { userMethods } from '../users/methods.js';
import { StateTracker } from '../users/state.js';
import { AlertStore } from '../alerts/store.js';
import { alertMethods } from '../alerts/methods.js';
import { JournalAlerts } from '../journal/alerts.js';
import { Monitor } from '../monitoring/monitor.js';
import { monitoringMethods } from '../monitoring/methods.js';
import { NetworkManager } from '../net/network.js';
import { TrafficMonitor } from '../traffic/monitor.js';
import { trafficMethods } from '../traffic/methods.js';
import type { ServiceNetworking } from '../services/manager.js';
import { Operations, type Operation } from '../operations/operations.js';
import { Dispatcher } from '../rpc/dispatcher.js';
import { MethodRegistry } from '../rpc/registry.js';
import { RpcServer } from '../rpc/server.js';
import { subscriptionMethods } from '../rpc/subscriptions.js';
import { Health } from '../system/health.js';
import { systemMethods } from '../system/methods.js';

export const PACKAGE_VERSION: string = (
  JSON.parse(readFileSync(resolve(dirname(fileURLToPath(import.meta.url)), '../../package.json'), 'utf8')) as { version: string }
).version;

/**
 * The composition root: builds every object in start order and passes dependencies
 * through constructors. Nothing else in smd creates long-lived objects.
 */
export class Daemon {
  readonly bus = new EventBus();
  readonly registry = new MethodRegistry();
  readonly health = new Health();
  readonly startedAt = Date.now();
  database!: OpenedDatabase;
  operations!: Operations;
  layers!: LayerStore;
  systemd!: SystemdManager;
  services!: ServiceManager;
  network: NetworkManager | null = null;
  traffic: TrafficMonitor | null = null;
  alerts!: AlertStore;
  monitor!: Monitor;
  journalAlerts!: JournalAlerts;
  state!: StateTracker;
  private servers: RpcServer[] = [];
  private timers: NodeJS.Timeout[] = [];
  private stopping: Promise<void> | null = null;

  constructor(
    readonly config: Config,
    readonly logger: Logger,
  ) {}

  /** Everything up to accepting requests; READY=1 may be sent once this resolves. */
  async start(): Promise<void> {
    const { config, logger } = this;
    ensureWritableDir(config.dataDir, 'dataDir');
    ensureWritableDir(config.runDir, 'runDir');
    ensureWritableDir(dirname(config.database.path), 'database.path');

    this.database = openDatabase(config.database.path);
    this.health.register('db', () => {
      const ok = this.database.sqlite.prepare('SELECT 1 AS one').get() as { one: number } | undefined;
      return { ok: ok?.one === 1, detail: `schema version ${this.database.schemaVersion}` };
    });

    this.operations = new Operations(this.database.db, this.bus, logger.child({ module: 'operations' }), process.env.SMD_CRASH_AT ?? null);
    const interrupted = this.operations.failInterrupted();
    if (interrupted.length > 0) logger.warn('operations interrupted by the previous stop were marked failed', { ids: interrupted.map((o) => o.id) });

    this.layers = new LayerStore(this.database.db, config.dataDir, config.images, logger.child({ module: 'layers' }));
    await this.layers.reconcile();

    this.systemd = new SystemdManager({ bus: config.systemd.bus, unitDir: config.systemd.unitDir, logger: logger.child({ module: 'systemd' }), callTimeoutMs: config.systemd.callTimeoutMs });
    this.health.register('systemd', () => {
      const h = this.systemd.health();
      return { ok: h.ok, detail: h.detail };
    });
    this.alerts = new AlertStore({ db: this.database.db, bus: this.bus });
    this.journalAlerts = new JournalAlerts({ db: this.database.db, alerts: this.alerts, logger: logger.child({ module: 'journal' }), alertPriority: config.journal.alertPriority });
    this.health.register('journal', () => (existsSync(JOURNAL_SOCKET) ? this.journalAlerts.health() : { ok: false, detail: `${JOURNAL_SOCKET} is missing: is systemd-journald running?` }));
    const networking = await this.startTraffic();
    await this.systemd.connect();
    this.services = new ServiceManager({
      db: this.database.db,
      config,
      systemd: this.systemd,
      layers: this.layers,
      operations: this.operations,
      bus: this.bus,
      logger: logger.child({ module: 'services' }),
      ...(networking ? { networking } : {}),
    });
    this.state = new StateTracker({ db: this.database.db, bus: this.bus, logger: logger.child({ module: 'state' }), layout: this.services.layout, currentUsers: () => this.services.currentUsers() });
    await this.restoreServices(interrupted);
    if (this.network && this.traffic) {
      const live = new Set(this.services.list().map((s) => s.id));
      await this.network.reconcile(live);
      await this.traffic.reconcile(live);
    }
    this.monitor = new Monitor({
      db: this.database.db,
      systemd: this.systemd,
      logger: logger.child({ module: 'monitoring' }),
      dataDir: config.dataDir,
      alerts: this.alerts,
      // The state folder sits beside the storage folder (see ServiceLayout).
      stateFileOf: (_id, storageFolder) => join(dirname(storageFolder), 'state', 'state'),
      ...(this.traffic ? { trafficTotals: () => trafficTotals(this.traffic!) } : {}),
    });

    this.registry.add(
      ...systemMethods(this.database, this.bus, this.health, { name: 'smd', version: PACKAGE_VERSION, startedAt: this.startedAt }, this.registry),
      ...operationMethods(this.operations),
      ...layerMethods(this.layers, this.operations),
      ...serviceMethods(this.services, this.operations),
      ...userMethods(this.services, this.operations),
      ...alertMethods(this.alerts),
      ...monitoringMethods(this.monitor),
      ...trafficMethods(this.traffic ?? { get: () => [] }),
      ...subscriptionMethods(this.bus),
    );

    const dispatcher = new Dispatcher(this.registry, logger.child({ module: 'rpc' }), { maxBatch: config.rpc.maxBatch });
    const common = { maxRequestBytes: config.rpc.maxRequestBytes };
    this.servers = [
      new RpcServer(dispatcher, logger, { ...common, path: config.socket, readOnly: false, mode: 0o660 }),
      new RpcServer(dispatcher, logger, { ...common, path: config.readOnlySocket, readOnly: true, mode: 0o666 }),
    ];
    for (const server of this.servers) await server.listen();
    logger.info('smd started', { socket: config.socket, readOnlySocket: config.readOnlySocket, database: config.database.path });
  }

  /**
   * Per-service networks and traffic accounting, when enabled. Without iptables (missing or
   * failing) traffic is reported unhealthy and services still install and run.
   */
  private async startTraffic(): Promise<ServiceNetworking | null> {
    const { config, logger } = this;
    if (!config.traffic.enabled) {
      this.health.register('traffic', () => ({ ok: true, detail: 'disabled in the configuration' }));
      return null;
    }
    const network = new NetworkManager({ db: this.database.db, config: config.traffic, logger: logger.child({ module: 'net' }) });
    const traffic = new TrafficMonitor({ db: this.database.db, bus: this.bus, config: config.traffic, logger: logger.child({ module: 'traffic' }) });
    this.network = network;
    this.traffic = traffic;
    this.health.register('traffic', () => {
      const t = traffic.health();
      const n = network.health();
      return t.ok && n.ok ? t : { ok: false, detail: [t.ok ? null : t.detail, n.ok ? null : n.detail].filter(Boolean).join('; ') };
    });
    await traffic.start();
    return {
      ensure: async (serviceId, limits) => {
        const n = await network.ensureServiceNetwork(serviceId);
        await traffic
          .addService(serviceId, n.address, { ...trafficLimits(limits), hostVeth: n.hostVeth, netnsName: n.netnsName })
          .catch((err: unknown) => logger.warn('traffic accounting for a service failed; it runs unaccounted', { serviceId, err }));
        return { netnsPath: n.netnsPath, address: n.address };
      },
      remove: async (serviceId) => {
        await traffic.removeService(serviceId).catch((err: unknown) => logger.warn('removing traffic chains failed', { serviceId, err }));
        await network.removeServiceNetwork(serviceId);
      },
      address: (serviceId) => network.addressOf(serviceId),
      updateLimits: (serviceId, limits) => traffic.updateLimits(serviceId, trafficLimits(limits)),
    };
  }

  /**
   * Start-up reconciliation when systemd answers now; otherwise at its first resync. Later
   * resyncs (after a bus or manager restart) only start what should run and does not.
   */
  private async restoreServices(interrupted: Operation[]): Promise<void> {
    const reconcile = async () => {
      const report = await this.services.reconcile(interrupted);
      this.logger.info('services reconciled', report);
      this.services.sweepTtl();
    };
    let reconciled = false;
    if (this.systemd.health().ok) {
      await reconcile();
      reconciled = true;
    } else {
      this.logger.warn('systemd is not reachable; services will be reconciled once it is', { detail: this.systemd.health().detail });
    }
    this.systemd.on('resynced', () => {
      const work = reconciled ? this.services.resume() : reconcile();
      reconciled = true;
      work.catch((err: unknown) => this.logger.error('resync of services failed', { err }));
    });
    const housekeeping = () => {
      this.services.sweepTtl();
      this.operations.prune(OPERATIONS_RETENTION);
    };
    this.operations.prune(OPERATIONS_RETENTION);
    const ttlTimer = setInterval(housekeeping, TTL_SWEEP_MS);
    ttlTimer.unref();
    this.timers.push(ttlTimer);
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
      for (const t of this.timers) clearInterval(t);
      await Promise.all(this.servers.map((s) => s.close()));
      await this.monitor?.stop();
      await this.journalAlerts?.stop();
      await this.traffic?.stop();
      if (this.operations) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([this.operations.drain(), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
        clearTimeout(timer);
      }
      this.state?.close();
      this.services?.close();
      await this.systemd?.close();
      this.database?.close();
      this.logger.info('smd stopped');
    })();
    return this.stopping;
  }
}

const JOURNAL_SOCKET = '/run/systemd/journal/socket';

function trafficLimits(s: { ulLimit?: number | undefined; dlLimit?: number | undefined; ulSpeed?: number | undefined; dlSpeed?: number | undefined }) {
  return { ulLimit: s.ulLimit ?? null, dlLimit: s.dlLimit ?? null, ulSpeed: s.ulSpeed ?? null, dlSpeed: s.dlSpeed ?? null };
}

/** Upload (out) and download (in) totals of the current period, per service. */
function trafficTotals(traffic: TrafficMonitor): Map<string, { upload: number | null; download: number | null }> {
  const totals = new Map<string, { upload: number | null; download: number | null }>();
  for (const row of traffic.get()) {
    if (!row.serviceId) continue;
    const t = totals.get(row.serviceId) ?? { upload: null, download: null };
    if (row.direction === 'out') t.upload = row.bytes;
    else t.download = row.bytes;
    totals.set(row.serviceId, t);
  }
  return totals;
}
const TTL_SWEEP_MS = 3_600_000;
/** Finished operations are kept for 30 days, and the newest 1000 always. */
const OPERATIONS_RETENTION = { keep: 1000, maxAgeMs: 30 * 86_400_000 };

/** Creates the directory if needed and proves it is writable, or stops with a one-line reason. */
function ensureWritableDir(dir: string, key: string): void {
  try {
    mkdirSync(dir, { recursive: true });
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (err) {
    throw new SmError('INTERNAL', `${key} ${dir} is not a writable directory: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { key, dir });
  }
}
