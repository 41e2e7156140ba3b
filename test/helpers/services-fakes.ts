/**
 * A services domain on fakes, for fast unit tests without root: a real SQLite file and real
 * operations and event bus, a fake systemd adapter and a fake host that keep their state in
 * memory and fail where a test tells them to.
 */
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { parseConfig } from '../../src/config/config.js';
import { openDatabase } from '../../src/db/database.js';
import { SmError } from '../../src/errors.js';
import { EventBus } from '../../src/events/bus.js';
import { ImageSources } from '../../src/images/sources.js';
import type { LayerStore } from '../../src/layers/store.js';
import { silentLogger } from '../../src/log.js';
import { Operations } from '../../src/operations/operations.js';
import type { HostProvisioning, Owner } from '../../src/services/host.js';
import { ServiceManager } from '../../src/services/manager.js';
import type { JobOutcome, SystemdAdapter, SystemdHealth, UnitState, UnitView } from '../../src/systemd/types.js';
import { buildExampleImages, tempDir } from './daemon.js';

type Hook = (name: string) => Promise<void> | void;

export class FakeSystemd extends EventEmitter implements SystemdAdapter {
  readonly units = new Map<string, UnitState>();
  readonly files = new Map<string, string>();
  readonly calls: string[] = [];
  /** Called inside a start job, before it ends (throw to fail the job). */
  onStart: Hook = () => {};
  onStop: Hook = () => {};
  onRestart: Hook = () => {};
  onRemove: Hook = () => {};

  async connect() {}
  async close() {}
  health(): SystemdHealth {
    return { ok: true, detail: 'fake', bus: 'up', manager: true, reconnects: 0 };
  }
  async writeUnit(name: string, text: string) {
    this.files.set(name, text);
  }
  async removeUnit(name: string) {
    await this.onRemove(name);
    return this.files.delete(name);
  }
  async reload() {}
  /** Sets a unit's state as a signal would, and emits it. */
  signal(name: string, activeState: string, subState: string, result: string | null = 'success'): void {
    const s: UnitState = { unit: name, loadState: 'loaded', activeState, subState, result, execMainStatus: null, execMainCode: null, mainPid: activeState === 'active' ? 1234 : null, restarts: 0, since: Date.now() };
    this.units.set(name, s);
    this.emit('unit', { unit: name, state: s, cause: 'signal' });
  }
  private outcome(name: string): JobOutcome {
    const s = this.units.get(name);
    return { unit: name, job: '/job/1', jobResult: 'done', activeState: s?.activeState ?? 'inactive', subState: s?.subState ?? 'dead', result: s?.result ?? null, execMainStatus: null };
  }
  async startUnit(name: string) {
    this.calls.push(`start ${name}`);
    if (!this.files.has(name)) throw new SmError('SYSTEMD', `Unit ${name} not found.`, { unit: name, dbusError: 'org.freedesktop.systemd1.NoSuchUnit' });
    this.signal(name, 'active', 'running');
    await this.onStart(name);
    return this.outcome(name);
  }
  async stopUnit(name: string) {
    this.calls.push(`stop ${name}`);
    await this.onStop(name);
    if (!this.units.has(name)) throw new SmError('SYSTEMD', `Unit ${name} not loaded.`, { unit: name });
    this.signal(name, 'inactive', 'dead');
    return this.outcome(name);
  }
  async restartUnit(name: string) {
    this.calls.push(`restart ${name}`);
    await this.onRestart(name);
    this.signal(name, 'active', 'running');
    return this.outcome(name);
  }
  async resetFailedUnit() {}
  async getUnit(name: string): Promise<UnitView> {
    const s = this.units.get(name) ?? { unit: name, loadState: 'not-found', activeState: 'inactive', subState: 'dead', result: null, execMainStatus: null, execMainCode: null, mainPid: null, restarts: 0, since: null };
    return { ...s, memoryCurrent: null, tasksCurrent: null };
  }
  async getUnits(names: readonly string[]) {
    return Promise.all(names.map((n) => this.getUnit(n)));
  }
  async listUnits() {
    return this.knownUnits();
  }
  knownUnits(): UnitState[] {
    return [...this.units.values()];
  }
  knownUnit(name: string): UnitState | undefined {
    return this.units.get(name);
  }
}

export class FakeHost implements HostProvisioning {
  readonly accounts = new Set<number>();
  readonly dirs = new Set<string>();
  /** Storage folders created, with the limit asked for. */
  readonly storage = new Map<string, number | null>();
  readonly quotaMounts = new Set<string>();
  readonly quotas = new Set<string>();
  readonly mounts = new Map<string, { upper: string }>();
  /** Throw from a method by name, with its arguments; return nothing to let it pass. */
  fail: (method: string, ...args: unknown[]) => Error | undefined | Promise<Error | undefined> = () => undefined;

  private async check(method: string, ...args: unknown[]) {
    const err = await this.fail(method, ...args);
    if (err) throw err;
  }
  async readPasswd() {
    return '';
  }
  async ensureAccount(uid: number) {
    await this.check('ensureAccount', uid);
    this.accounts.add(uid);
    return `smd-${uid}`;
  }
  async removeAccount(uid: number) {
    this.accounts.delete(uid);
  }
  async ensureDir(dir: string) {
    this.dirs.add(dir);
  }
  async ensureStorage(dir: string, _owner: Owner, limit: number | null) {
    await this.check('ensureStorage', dir, limit);
    this.storage.set(dir, limit);
    if (limit) {
      this.quotas.add(dir);
      this.quotaMounts.add(dir);
    }
  }
  hasQuota(dir: string) {
    return this.quotas.has(dir);
  }
  async resizeQuota(dir: string, limit: number) {
    await this.check('resizeQuota', dir, limit);
  }
  async releaseQuota(dir: string) {
    await this.check('releaseQuota', dir);
    this.quotaMounts.delete(dir);
  }
  async removeQuota(dir: string) {
    this.quotas.delete(dir);
    this.quotaMounts.delete(dir);
  }
  async mountOverlay(target: string, _lowers: readonly string[], upper: string) {
    await this.check('mountOverlay', target, upper);
    this.mounts.set(target, { upper });
  }
  async unmount(target: string) {
    await this.check('unmount', target);
    return this.mounts.delete(target);
  }
  async mountPoints() {
    return [...this.mounts.keys(), ...this.quotaMounts];
  }
  async listDir() {
    return [];
  }
  async remove(path: string) {
    for (const d of [...this.storage.keys()]) if (d.startsWith(path)) this.storage.delete(d);
  }
  exists() {
    return false;
  }
  readText() {
    return null;
  }
  files = new Map<string, string>();
  async writeInPlace(path: string, text: string) {
    if (this.files.get(path) === text) return false;
    this.files.set(path, text);
    return true;
  }
}

export class FakeLayers {
  prunes = 0;
  dirFor(digest: string) {
    return `/layers/${digest}`;
  }
  exclusive<T>(fn: () => Promise<T>) {
    return fn();
  }
  async ensureLayers() {
    return { extracted: [], reused: [] };
  }
  async prune() {
    this.prunes++;
    return [];
  }
  has() {
    return false;
  }
}

interface Tap {
  teardown(fn: () => unknown): void;
}

let images: Record<string, string> | null = null;

/** A ServiceManager on fakes; `images` are the example archives by `<name>-v<version>`. */
export function fakeServices(t: Tap, config: Record<string, unknown> = {}) {
  const dir = tempDir(t, 'smd-unit-');
  const db = openDatabase(join(dir, 'smd.db'));
  t.teardown(() => db.close());
  const cfg = parseConfig({ dataDir: join(dir, 'data'), runDir: join(dir, 'run'), services: { settleMs: 0 }, systemd: { unitDir: join(dir, 'units') }, traffic: { enabled: false }, ...config });
  const bus = new EventBus();
  const operations = new Operations(db.db, bus, silentLogger);
  const systemd = new FakeSystemd();
  const host = new FakeHost();
  const layers = new FakeLayers();
  const services = new ServiceManager({
    db: db.db,
    config: cfg,
    systemd,
    layers: layers as unknown as LayerStore,
    // The real sources on the real example archives: reading them is pure file work.
    sources: new ImageSources({ dataDir: dir, limits: cfg.images, reserveBytes: 0, hasLayer: () => false, logger: silentLogger }),
    operations,
    bus,
    logger: silentLogger,
    host,
    readLog: async () => ({ entries: [], cursor: null }) as never,
  });
  t.teardown(() => services.close());
  images ??= buildExampleImages(tempDir({ teardown: () => {} }, 'smd-unit-images-')).byName;
  /** Installs and waits; returns the finished operation. */
  const install = async (req: Parameters<ServiceManager['install']>[0]) => operations.wait(services.install(req).id, 10_000);
  return { dir, db, config: cfg, bus, operations, systemd, host, layers, services, images, install };
}
