import type { Config } from '../config/config.js';
import type { Db } from '../db/database.js';
import type { SmError } from '../errors.js';
import type { EventBus } from '../events/bus.js';
import type { readUnitLog } from '../journal/logs.js';
import type { ImageSources } from '../images/sources.js';
import type { LayerStore } from '../layers/store.js';
import { KeyedLock } from '../lock.js';
import type { Logger } from '../log.js';
import type { Operation, OperationHandle, Operations } from '../operations/operations.js';
import type { SystemdAdapter } from '../systemd/types.js';
import { UsersSwitch } from '../users/switch.js';
import { Configurator } from './configure.js';
import type { ServiceContext } from './context.js';
import { ServiceFiles } from './files.js';
import type { HostProvisioning } from './host.js';
import { ChangeGroup } from './group.js';
import { Installer } from './install.js';
import { ServiceLayout } from './layout.js';
import { Lifecycle } from './lifecycle.js';
import { Reconciler, type ReconcileReport } from './reconcile.js';
import { Removal } from './removal.js';
import { ServiceRepository, toService } from './repository.js';
import type { Settings } from './settings.js';
import { TtlSweeper } from './ttl.js';
import type { InstallRequest, LiveView, Service, ServiceNetworking } from './types.js';

export { STATE, STATUS, type InstallRequest, type LiveView, type Service, type ServiceNetworking } from './types.js';
export { mapUnitState } from './lifecycle.js';
export type { ChangeGroup, GroupItem, GroupRecord } from './group.js';

export interface ServiceManagerDeps {
  db: Db;
  config: Config;
  systemd: SystemdAdapter;
  layers: LayerStore;
  /** Resolves and fetches images (local archives, URLs, registries). */
  sources: ImageSources;
  operations: Operations;
  bus: EventBus;
  logger: Logger;
  /** Accounts, folders, quotas, mounts: `HostSystem` on a device, a fake in unit tests. */
  host: HostProvisioning;
  /** The journal reader (`readUnitLog`). */
  readLog: typeof readUnitLog;
  networking?: ServiceNetworking;
}

/**
 * Services: an OCI image becomes a sandboxed systemd unit that smd starts, watches, updates
 * (with rollback) and removes. This is the domain's front: each concern lives in its own file
 * (repository, files, lifecycle, install, configure, removal, reconcile, ttl; users/switch).
 */
export class ServiceManager {
  readonly layout: ServiceLayout;
  private readonly ctx: ServiceContext;
  private readonly lifecycle: Lifecycle;
  private readonly installer: Installer;
  private readonly configurator: Configurator;
  private readonly removal: Removal;
  private readonly reconciler: Reconciler;
  private readonly ttl: TtlSweeper;
  private readonly users: UsersSwitch;

  constructor(private readonly deps: ServiceManagerDeps) {
    this.layout = new ServiceLayout(deps.config.dataDir, deps.config.runDir);
    this.ctx = {
      config: deps.config,
      repo: new ServiceRepository(deps.db, this.layout, deps.config.services.uidRange),
      layout: this.layout,
      host: deps.host,
      systemd: deps.systemd,
      layers: deps.layers,
      sources: deps.sources,
      operations: deps.operations,
      bus: deps.bus,
      logger: deps.logger,
      networking: deps.networking,
      locks: new KeyedLock(),
    };
    const files = new ServiceFiles(this.ctx);
    this.lifecycle = new Lifecycle(this.ctx, files);
    this.removal = new Removal(this.ctx);
    this.installer = new Installer(this.ctx, files, this.lifecycle, this.removal);
    this.configurator = new Configurator(this.ctx, files, this.lifecycle);
    this.reconciler = new Reconciler(this.ctx, files, this.lifecycle, this.installer, this.removal);
    this.ttl = new TtlSweeper(this.ctx, this.removal);
    this.users = new UsersSwitch(this.ctx, files, this.lifecycle);
  }

  close(): void {
    this.lifecycle.close();
  }

  list(): Service[] {
    return this.ctx.repo.all().map((r) => ({ ...toService(r), address: this.deps.networking?.address(r.id) ?? null }));
  }

  get(id: string): Service {
    return this.lifecycle.view(id);
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
    const { entries, cursor } = await this.deps.readLog({ unit: service.unit, ...(service.uid != null ? { uid: service.uid } : {}), ...q });
    return { entries: entries.map(({ time, priority, message }) => ({ time, priority, message })), cursor };
  }

  /** Ids of the services attached to a set of users (canonical claims). */
  attachedTo(canonical: string): Set<string> {
    return this.ctx.repo.attachedTo(canonical);
  }

  /** The current users' canonical claims (config.currentUsers). */
  currentUsers(): string {
    return this.ctx.repo.currentUsers();
  }

  precheckInstall(req: InstallRequest): void {
    this.installer.precheck(req);
  }

  install(req: InstallRequest): Operation {
    return this.installer.install(req);
  }

  /**
   * A group of installs and updates that hold or are undone together, recorded in `op`'s
   * inputs so that a restart finishes or undoes it (the desired state's apply).
   */
  beginGroup(op: OperationHandle, since: number): ChangeGroup {
    return new ChangeGroup(this.ctx, this.installer, this.removal, op, since);
  }

  start(id: string): Promise<Service> {
    return this.lifecycle.start(id);
  }

  stop(id: string): Promise<Service> {
    return this.lifecycle.stop(id);
  }

  restart(id: string): Promise<Service> {
    return this.lifecycle.restart(id);
  }

  remove(id: string): Operation {
    return this.removal.remove(id);
  }

  configure(id: string, changes: Settings, expectedRowVersion?: number): Promise<Service> {
    return this.configurator.configure(id, changes, expectedRowVersion);
  }

  setUsers(claims: string[]): Operation {
    return this.users.setUsers(claims);
  }

  usersView(): { users: string[]; services: string[] } {
    return this.users.view();
  }

  expired(now = Date.now()): string[] {
    return this.ttl.expired(now);
  }

  sweepTtl(): Operation[] {
    return this.ttl.sweep();
  }

  reconcile(interrupted: Operation[]): Promise<ReconcileReport> {
    return this.reconciler.reconcile(interrupted);
  }

  resume(): Promise<void> {
    return this.reconciler.resume();
  }
}
