/**
 * smd's service network: one bridge owned by smd, one network namespace per service joined to it by
 * a veth pair, an address from the configured subnet (stable per service, kept in
 * `service_networks`), a default route via the bridge, NAT to the outside and IP forwarding.
 * Every step is idempotent: ensure twice, or after a crash left half of it, converges.
 * All programs run through a Runner (run() by default), so tests confine them to a sandbox.
 */
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import type { Config } from '../config/config.js';
import type { Db } from '../db/database.js';
import { SmError, toSmError } from '../errors.js';
import type { Logger } from '../log.js';
import { formatCidr, hostAt, hostCount, hostIndex, parseCidr, type Cidr } from './ipv4.js';
import { HOST_VETH_PREFIX, NETNS_PREFIX, NS_IFNAME, hostVethFor, netnsNameFor, peerVethFor } from './names.js';
import { defaultRunner, type Runner } from './runner.js';

export type TrafficConfig = Config['traffic'];

export interface ServiceNetwork {
  serviceId: string;
  /** For the unit: NetworkNamespacePath=<netnsPath>. */
  netnsPath: string;
  netnsName: string;
  address: string;
  /** The bridge address, the service's default gateway. */
  gateway: string;
  hostVeth: string;
}

export interface NetworkBinaries {
  ip: string;
  iptables: string;
}

export interface NetworkManagerOptions {
  db: Db;
  config: TrafficConfig;
  logger: Logger;
  runner?: Runner;
  binaries?: Partial<NetworkBinaries>;
}

interface IpLink {
  ifname: string;
  master?: string;
  operstate?: string;
  flags?: string[];
}

interface IpAddrInfo {
  ifname: string;
  addr_info?: { family: string; local: string; prefixlen: number; scope?: string }[];
}

const TIMEOUT = 15_000;

export class NetworkManager {
  private readonly db: Db;
  private readonly config: TrafficConfig;
  private readonly logger: Logger;
  private readonly runner: Runner;
  private readonly bin: NetworkBinaries;
  private readonly writeProcSys: (path: string, value: string) => Promise<void>;
  private readonly subnet: Cidr;
  private readonly gateway: string;
  private natError: string | null = null;
  /** One network change at a time: ip commands on the same links must not interleave. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(opts: NetworkManagerOptions) {
    this.db = opts.db;
    this.config = opts.config;
    this.logger = opts.logger;
    this.runner = opts.runner ?? defaultRunner;
    this.bin = { ip: 'ip', iptables: 'iptables', ...opts.binaries };
    // Not sysctl(8): a minimal Debian does not have it, and the file is all it writes. net.* files
    // are per network namespace: a given runner (a sandbox's) writes them where it runs.
    const runner = opts.runner;
    this.writeProcSys = runner ? async (path, value) => void (await runner('tee', [path], { input: value, timeoutMs: TIMEOUT })) : (path, value) => writeFile(path, value);
    this.subnet = parseCidr(opts.config.subnet);
    if (hostCount(this.subnet) < 2) throw new SmError('INTERNAL', `traffic.subnet ${opts.config.subnet} is too small`);
    this.gateway = hostAt(this.subnet, 0);
  }

  /** `{ok:false}` when NAT or forwarding could not be set up (services still get their network). */
  health(): { ok: boolean; detail: string } {
    return this.natError ? { ok: false, detail: this.natError } : { ok: true, detail: `bridge ${this.config.bridge} ${this.gateway}/${this.subnet.prefix}` };
  }

  get bridgeAddress(): string {
    return this.gateway;
  }

  ensureBridge(): Promise<void> {
    return this.serial(() => this.doEnsureBridge());
  }

  ensureServiceNetwork(serviceId: string): Promise<ServiceNetwork> {
    return this.serial(() => this.doEnsureService(serviceId));
  }

  removeServiceNetwork(serviceId: string): Promise<void> {
    return this.serial(async () => {
      await this.deleteLink(hostVethFor(serviceId));
      await this.deleteNetns(netnsNameFor(serviceId));
      this.db.$client.prepare('DELETE FROM service_networks WHERE serviceId = ?').run(serviceId);
      this.logger.info('service network removed', { serviceId });
    });
  }

  /**
   * Rebuilds the network of every live service and removes namespaces, veths and address
   * allocations of any other. Returns the ids (or, for orphans unknown to the database, the
   * namespace or link names) that were removed.
   */
  reconcile(liveServiceIds: Set<string>): Promise<{ removed: string[]; failed: { serviceId: string; error: string }[] }> {
    return this.serial(async () => {
      await this.doEnsureBridge();
      const failed: { serviceId: string; error: string }[] = [];
      for (const id of liveServiceIds) {
        try {
          await this.doEnsureService(id);
        } catch (err) {
          failed.push({ serviceId: id, error: toSmError(err).message });
          this.logger.error('service network not ensured', { serviceId: id, err });
        }
      }
      const removed: string[] = [];
      const liveNs = new Set([...liveServiceIds].map(netnsNameFor));
      const liveVeth = new Set([...liveServiceIds].map(hostVethFor));
      const rows = this.db.$client.prepare('SELECT serviceId FROM service_networks').all() as { serviceId: string }[];
      const known = new Map<string, string>();
      for (const r of rows) known.set(netnsNameFor(r.serviceId), r.serviceId);
      for (const r of rows) {
        if (liveServiceIds.has(r.serviceId)) continue;
        await this.deleteLink(hostVethFor(r.serviceId));
        await this.deleteNetns(netnsNameFor(r.serviceId));
        this.db.$client.prepare('DELETE FROM service_networks WHERE serviceId = ?').run(r.serviceId);
        removed.push(r.serviceId);
      }
      for (const ns of await this.listNetns()) {
        if (!ns.startsWith(NETNS_PREFIX) || liveNs.has(ns)) continue;
        await this.deleteNetns(ns);
        if (!known.has(ns)) removed.push(ns);
      }
      for (const link of await this.listLinks()) {
        if (!link.ifname.startsWith(HOST_VETH_PREFIX) || liveVeth.has(link.ifname)) continue;
        await this.deleteLink(link.ifname);
        removed.push(link.ifname);
      }
      if (removed.length) this.logger.info('orphan service networks removed', { removed });
      return { removed, failed };
    });
  }

  /** The stored address of a service, if it has one. */
  addressOf(serviceId: string): string | null {
    const row = this.db.$client.prepare('SELECT address FROM service_networks WHERE serviceId = ?').get(serviceId) as { address: string } | undefined;
    return row?.address ?? null;
  }

  /**
   * The service's address: the stored one, else the lowest free host of the subnet (the first
   * is the bridge's). Runs in an IMMEDIATE transaction, so concurrent allocators (even in other
   * processes) never hand out the same address; the unique index is the last guard.
   */
  allocateAddress(serviceId: string): string {
    const sqlite = this.db.$client;
    const get = sqlite.prepare('SELECT address FROM service_networks WHERE serviceId = ?');
    const all = sqlite.prepare('SELECT address FROM service_networks');
    const del = sqlite.prepare('DELETE FROM service_networks WHERE serviceId = ?');
    const ins = sqlite.prepare('INSERT INTO service_networks (serviceId, address, createdAt) VALUES (?, ?, ?)');
    const tx = sqlite.transaction((id: string): string => {
      const existing = get.get(id) as { address: string } | undefined;
      if (existing) {
        if (hostIndex(this.subnet, existing.address) > 0) return existing.address;
        del.run(id); // the subnet changed: allocate again inside the new one
      }
      const used = new Set<number>();
      for (const r of all.all() as { address: string }[]) used.add(hostIndex(this.subnet, r.address));
      const n = hostCount(this.subnet);
      for (let i = 1; i < n; i++) {
        if (used.has(i)) continue;
        const address = hostAt(this.subnet, i);
        ins.run(id, address, Date.now());
        return address;
      }
      throw new SmError('LIMIT', `no free address left in ${formatCidr(this.subnet)}`, { serviceId: id });
    });
    return tx.immediate(serviceId);
  }

  // ---- internals

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined); // the tail only orders the work: the caller gets the error from `next`
    return next;
  }

  private ip(args: string[]): Promise<string> {
    return this.runner(this.bin.ip, args, { timeoutMs: TIMEOUT }).then((r) => r.stdout);
  }

  private async doEnsureBridge(): Promise<void> {
    const br = this.config.bridge;
    const links = await this.listLinks();
    if (!links.some((l) => l.ifname === br)) await this.ip(['link', 'add', 'name', br, 'type', 'bridge']);
    // A bridge takes the lowest MAC of its ports unless given one: removing a service's veth
    // would change the gateway's MAC under every other service's ARP cache and cut them off.
    await this.ip(['link', 'set', 'dev', br, 'address', bridgeMac(br)]);
    await this.ip(['addr', 'replace', `${this.gateway}/${this.subnet.prefix}`, 'dev', br]);
    await this.ip(['link', 'set', br, 'up']);
    await this.ensureForwardingAndNat();
  }

  private async ensureForwardingAndNat(): Promise<void> {
    const br = this.config.bridge;
    const subnet = formatCidr(this.subnet);
    const rules: { table: string; chain: string; spec: string[] }[] = [
      { table: 'nat', chain: 'POSTROUTING', spec: ['-s', subnet, '!', '-o', br, '-j', 'MASQUERADE'] },
      // For hosts whose FORWARD policy is DROP; appended, so traffic chains (inserted first) still count.
      { table: 'filter', chain: 'FORWARD', spec: ['-i', br, '-j', 'ACCEPT'] },
      { table: 'filter', chain: 'FORWARD', spec: ['-o', br, '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'ACCEPT'] },
      // Connections to a service's exposed port (DNAT by the traffic monitor's SMD_PORTS), past its policy chain.
      { table: 'filter', chain: 'FORWARD', spec: ['-o', br, '-m', 'conntrack', '--ctstate', 'DNAT', '-j', 'ACCEPT'] },
    ];
    try {
      await this.writeProcSys('/proc/sys/net/ipv4/ip_forward', '1\n').catch((err: unknown) => {
        throw new SmError('UNAVAILABLE', `cannot enable IPv4 forwarding: ${(err as Error).message}`, { path: '/proc/sys/net/ipv4/ip_forward' }, { cause: err });
      });
      for (const r of rules) {
        const base = ['-w', '-t', r.table];
        const present = await this.runner(this.bin.iptables, [...base, '-C', r.chain, ...r.spec], { timeoutMs: TIMEOUT }).then(
          () => true,
          (err: unknown) => {
            const e = toSmError(err);
            // exit 1 = rule absent; anything else (missing binary, no permission) is a real failure
            if (e.details?.['exitCode'] === 1) return false;
            throw e;
          },
        );
        if (!present) await this.runner(this.bin.iptables, [...base, '-A', r.chain, ...r.spec], { timeoutMs: TIMEOUT });
      }
      this.natError = null;
    } catch (err) {
      this.natError = `NAT/forwarding not set up: ${toSmError(err).message}`;
      this.logger.warn('service network without NAT', { err });
    }
  }

  private async doEnsureService(serviceId: string): Promise<ServiceNetwork> {
    const address = this.allocateAddress(serviceId);
    const ns = netnsNameFor(serviceId);
    const hostVeth = hostVethFor(serviceId);
    const peer = peerVethFor(serviceId);
    const br = this.config.bridge;

    if (!(await this.listNetns()).includes(ns)) await this.ip(['netns', 'add', ns]);

    let hostLinks = await this.listLinks();
    let nsLinks = await this.listLinks(ns);
    const hasHost = hostLinks.some((l) => l.ifname === hostVeth);
    const nsHasIf = nsLinks.some((l) => l.ifname === NS_IFNAME);
    const nsHasPeer = nsLinks.some((l) => l.ifname === peer);
    if (!hasHost || (!nsHasIf && !nsHasPeer)) {
      // Half-made or broken pair: remove what is left and make it again.
      if (hasHost) await this.deleteLink(hostVeth);
      if (hostLinks.some((l) => l.ifname === peer)) await this.deleteLink(peer);
      if (nsHasIf) {
        // Not fatal here: if it stays, renaming the new peer below fails and says so.
        await this.ip(['-n', ns, 'link', 'del', NS_IFNAME]).catch((err: unknown) => this.logger.warn('stale interface in the service namespace not removed', { serviceId, ns, err }));
      }
      await this.ip(['link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', peer, 'netns', ns]);
      nsLinks = await this.listLinks(ns);
      hostLinks = [];
    }
    if (nsLinks.some((l) => l.ifname === peer) && !nsLinks.some((l) => l.ifname === NS_IFNAME)) {
      await this.ip(['-n', ns, 'link', 'set', peer, 'down']);
      await this.ip(['-n', ns, 'link', 'set', peer, 'name', NS_IFNAME]);
    }
    await this.ip(['link', 'set', hostVeth, 'master', br, 'up']);
    await this.ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    const prefix = this.subnet.prefix;
    const addrs = await this.ipJson<IpAddrInfo[]>(['-n', ns, '-j', 'addr', 'show', 'dev', NS_IFNAME]);
    for (const a of addrs[0]?.addr_info ?? []) {
      if (a.family === 'inet' && (a.local !== address || a.prefixlen !== prefix)) {
        await this.ip(['-n', ns, 'addr', 'del', `${a.local}/${a.prefixlen}`, 'dev', NS_IFNAME]);
      }
    }
    await this.ip(['-n', ns, 'addr', 'replace', `${address}/${prefix}`, 'dev', NS_IFNAME]);
    await this.ip(['-n', ns, 'link', 'set', NS_IFNAME, 'up']);
    await this.ip(['-n', ns, 'route', 'replace', 'default', 'via', this.gateway, 'dev', NS_IFNAME]);
    return { serviceId, netnsPath: `/run/netns/${ns}`, netnsName: ns, address, gateway: this.gateway, hostVeth };
  }

  private async ipJson<T>(args: string[]): Promise<T> {
    const out = (await this.ip(args)).trim();
    return (out ? JSON.parse(out) : []) as T;
  }

  private async listLinks(ns?: string): Promise<IpLink[]> {
    return this.ipJson<IpLink[]>([...(ns ? ['-n', ns] : []), '-j', 'link', 'show']);
  }

  private async listNetns(): Promise<string[]> {
    return parseNetnsList(await this.ip(['netns', 'list']));
  }

  private async deleteLink(name: string): Promise<void> {
    const links = await this.listLinks();
    if (links.some((l) => l.ifname === name)) await this.ip(['link', 'del', name]);
  }

  private async deleteNetns(name: string): Promise<void> {
    if ((await this.listNetns()).includes(name)) await this.ip(['netns', 'del', name]);
  }
}

/** `ip netns list` prints `name (id: N)` or `name`, one per line. */
/** A stable, locally administered unicast MAC for the bridge, from its name. */
export function bridgeMac(name: string): string {
  const h = createHash('sha256').update(`smd-bridge:${name}`).digest();
  return ['02', ...[...h.subarray(0, 5)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

export function parseNetnsList(out: string): string[] {
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.length > 0);
}
