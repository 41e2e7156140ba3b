import { join } from 'node:path';
import { parseLayerList } from '../layers/store.js';
import { renderHosts, renderResolvConf } from '../net/dns.js';
import { renderUnit } from '../systemd/unit.js';
import type { ServiceContext } from './context.js';
import { usersKey } from './layout.js';
import { columnsToSettings } from './settings.js';
import type { Row } from './types.js';
import { unitSpecOf } from './unit-spec.js';

/**
 * A service's pieces on the host for a set of users: account, storage folders (with quotas),
 * the unit file and the root overlay. Each call is idempotent.
 */
export class ServiceFiles {
  constructor(private readonly ctx: ServiceContext) {}

  /**
   * Account, storage and unit file for the row as it is. Cheap when nothing changed: the unit
   * file is only rewritten (and systemd reloaded) when its text differs. With `reload: false`
   * the caller reloads once for many services. With `quotas: false` (a service that will not
   * run now) no quota file system is mounted. Returns whether it wrote.
   */
  async prepare(row: Row, users: string, opts: { reload?: boolean; passwd?: string; quotas?: boolean } = {}): Promise<boolean> {
    const { host, layout } = this.ctx;
    const id = row.id;
    const uid = row.uid!;
    await host.ensureAccount(uid, opts.passwd);
    const key = usersKey(users);
    const data = layout.dataDirOf(key, id);
    const state = layout.stateDirOf(key, id);
    const owner = { uid, gid: uid };
    await host.ensureDir(layout.serviceDir(id));
    const quotas = opts.quotas ?? true;
    if (!quotas || (!row.storageLimit && !row.stateLimit)) await Promise.all([host.ensureStorage(data, owner, null), host.ensureStorage(state, owner, null)]);
    else for (const [dir, limit] of [[data, row.storageLimit], [state, row.stateLimit]] as const) await host.ensureStorage(dir, owner, limit ?? null);
    const settings = columnsToSettings(row);
    const network = this.ctx.networking ? await this.ctx.networking.ensure(row.id, settings) : null;
    // Its own names (dnsRules) and resolvers, rewritten in place: a change reaches the running service.
    const etc = network ? { hostsFile: join(layout.serviceDir(id), 'hosts'), resolvConf: join(layout.serviceDir(id), 'resolv.conf') } : {};
    if (network) {
      await host.writeInPlace(etc.hostsFile!, renderHosts(settings.hostname, settings.dnsRules ?? []));
      await host.writeInPlace(etc.resolvConf!, renderResolvConf(network.nameservers ?? []));
    }
    const text = renderUnit(unitSpecOf(row, { rootDirectory: layout.rootDir(id), dataDir: data, stateDir: state, netnsPath: network?.netnsPath, ...etc }, this.ctx.config.systemd));
    if (host.readText(join(this.ctx.config.systemd.unitDir, row.unit!)) === text) return false;
    await this.ctx.systemd.writeUnit(row.unit!, text, { reload: opts.reload ?? true });
    return true;
  }

  /** The overlay root of the row's version with the users' upper directory. */
  async mountRoot(row: Row, users: string): Promise<void> {
    const key = usersKey(users);
    const { layout } = this.ctx;
    const lowers = parseLayerList(row.layerList)
      .reverse()
      .map((d) => this.ctx.layers.dirFor(d));
    await this.ctx.host.mountOverlay(layout.rootDir(row.id), lowers, layout.upperDir(key, row.id, row.version ?? 0), layout.workDir(key, row.id, row.version ?? 0));
  }

  unmountRoot(id: string): Promise<boolean> {
    return this.ctx.host.unmount(this.ctx.layout.rootDir(id));
  }

  /** The root overlay and the quota mounts of the users, after the unit stopped. */
  async releaseMounts(row: Row, users: string): Promise<void> {
    await this.unmountRoot(row.id);
    const key = usersKey(users);
    if (row.storageLimit) await this.ctx.host.releaseQuota(this.ctx.layout.dataDirOf(key, row.id));
    if (row.stateLimit) await this.ctx.host.releaseQuota(this.ctx.layout.stateDirOf(key, row.id));
  }

  /** The upper and work directories of one version, for all users. */
  async removeVersionFiles(id: string, version: number): Promise<void> {
    const { host, layout } = this.ctx;
    for (const key of await host.listDir(layout.storageRoot())) {
      await host.remove(layout.upperDir(key, id, version));
      await host.remove(layout.workDir(key, id, version));
    }
  }
}
