/**
 * What the services domain sees of networking: one object that gives a service its namespace,
 * address and traffic accounting (NetworkManager + TrafficMonitor), takes them away again, and
 * applies changed limits. Without iptables (missing or failing) traffic is reported unhealthy and
 * services still get their network and run unaccounted.
 */
import type { Logger } from '../log.js';
import { deviceNameservers } from '../net/dns.js';
import type { NetworkManager } from '../net/network.js';
import type { NetworkPolicy, PolicySettings } from './policy-schema.js';
import type { TrafficMonitor } from './monitor.js';
import type { TrafficLimits } from './types.js';

/** A service's limit settings as the services domain keeps them (absent: none). */
export interface LimitSettings {
  ulLimit?: number | undefined;
  dlLimit?: number | undefined;
  ulSpeed?: number | undefined;
  dlSpeed?: number | undefined;
}

/** A service's limit and policy settings. */
export type NetSettings = LimitSettings & PolicySettings;

/** Settings to the policy the monitor enforces: absent lists are empty, egress allowed, the device's resolvers. */
export function networkPolicy(s: PolicySettings, device: () => string[]): NetworkPolicy {
  return { exposedPorts: s.exposedPorts ?? [], trafficRules: s.trafficRules ?? [], egress: s.egress ?? 'allow', nameservers: s.nameservers ?? device() };
}

/** Settings to the monitor's limits: absent is null (no limit, not shaped). */
export function trafficLimits(s: LimitSettings): TrafficLimits {
  return { ulLimit: s.ulLimit ?? null, dlLimit: s.dlLimit ?? null, ulSpeed: s.ulSpeed ?? null, dlSpeed: s.dlSpeed ?? null };
}

/** Upload (out) and download (in) totals of the current period, per service. */
export function trafficTotals(traffic: Pick<TrafficMonitor, 'get'>): Map<string, { upload: number | null; download: number | null }> {
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

export interface NetworkingDeps {
  network: Pick<NetworkManager, 'ensureBridge' | 'ensureServiceNetwork' | 'removeServiceNetwork' | 'addressOf' | 'health'>;
  traffic: Pick<TrafficMonitor, 'start' | 'addService' | 'removeService' | 'updateLimits' | 'health'>;
  logger: Logger;
  /** The device's resolvers (default: src/net/dns.ts deviceNameservers). */
  nameservers?: () => string[];
}

export class ServiceNetworks {
  constructor(private readonly deps: NetworkingDeps) {}

  /**
   * Starts accounting, then the bridge: before services are restored, because after a boot the
   * bridge is gone and every service's veth joins it. A bridge that cannot be made is logged;
   * services then start without their network.
   */
  async start(): Promise<void> {
    const { network, traffic, logger } = this.deps;
    await traffic.start();
    await network.ensureBridge().catch((err: unknown) => logger.error('service bridge not set up; services start without their network', { err }));
  }

  /** Traffic and network health in one: ok when both are. */
  health(): { ok: boolean; detail: string } {
    const t = this.deps.traffic.health();
    const n = this.deps.network.health();
    return t.ok && n.ok ? t : { ok: false, detail: [t.ok ? null : t.detail, n.ok ? null : n.detail].filter(Boolean).join('; ') };
  }

  /** The resolvers a service with these settings uses. */
  nameservers(settings: PolicySettings): string[] {
    return settings.nameservers ?? (this.deps.nameservers ?? deviceNameservers)();
  }

  /**
   * Creates (idempotently) the service's namespace, address, accounting and network policy
   * (applied live: a changed policy is one restore); accounting failing is logged.
   */
  async ensure(serviceId: string, settings: NetSettings): Promise<{ netnsPath: string; address: string; nameservers: string[] }> {
    const { network, traffic, logger } = this.deps;
    const n = await network.ensureServiceNetwork(serviceId);
    const nameservers = this.nameservers(settings);
    const policy = networkPolicy(settings, () => nameservers);
    await traffic
      .addService(serviceId, n.address, { ...trafficLimits(settings), hostVeth: n.hostVeth, netnsName: n.netnsName, policy })
      .catch((err: unknown) => logger.warn('traffic accounting for a service failed; it runs unaccounted', { serviceId, err }));
    return { netnsPath: n.netnsPath, address: n.address, nameservers };
  }

  async remove(serviceId: string): Promise<void> {
    const { network, traffic, logger } = this.deps;
    await traffic.removeService(serviceId).catch((err: unknown) => logger.warn('removing traffic chains failed', { serviceId, err }));
    await network.removeServiceNetwork(serviceId);
  }

  address(serviceId: string): string | null {
    return this.deps.network.addressOf(serviceId);
  }

  updateLimits(serviceId: string, limits: LimitSettings): Promise<void> {
    return this.deps.traffic.updateLimits(serviceId, trafficLimits(limits));
  }
}
