/**
 * Traffic accounting, limits and shaping. One `iptables-save -c` per sample reads every chain;
 * totals survive counter resets and restarts (persisted to `trafficmonitor`); a service that
 * passes its period limit has that direction dropped until the next period; `ulSpeed`/`dlSpeed`
 * shape with tc. Without iptables, health says why and every method keeps answering.
 */
import type { AlertStore } from '../alerts/store.js';
import type { Db } from '../db/database.js';
import { toSmError } from '../errors.js';
import type { EventBus, EventMap } from '../events/bus.js';
import type { Logger } from '../log.js';
import type { TrafficConfig } from '../net/network.js';
import type { Runner } from '../net/runner.js';
import { observe, rebase, startTotal, totalOf, type ChainTotal } from './counters.js';
import { alertLimit, limitPayload } from './limit-alerts.js';
import { resumeTotal, TrafficStore, type StoredRow } from './store.js';
import type { ServiceTrafficOptions, TrafficRow } from './types.js';
import { Iptables, type IptablesBinaries } from './iptables.js';
import { countingBytes, droppedPackets, type SavedRuleset } from './parse.js';
import { periodStart as periodStartOf, type Period } from './period.js';
import { forwardChainRules, planRuleset, serviceChainRules, systemChainRules, type DesiredChain } from './rules.js';
import { Shaper } from './shaper.js';
import { allServiceChains, policyChain, serviceChain, systemChain, type Direction } from './naming.js';
import { policyDispatch, servicePolicyChains } from './policy.js';

export interface TrafficMonitorOptions {
  db: Db;
  bus: EventBus;
  /** Where the limit alerts go (source `traffic`, kind `traffic.limit`). */
  alerts: AlertStore;
  config: TrafficConfig;
  logger: Logger;
  now?: () => number;
  /** How ip/iptables/tc run: run() by default; tests confine them to a sandbox. */
  runner?: Runner;
  binaries?: Partial<IptablesBinaries> & { tc?: string };
}

interface ChainEntry {
  chain: string;
  serviceId: string | null;
  direction: Direction;
  total: ChainTotal;
  /** The DROP rule is in place (set only after the restore that put it there succeeded). */
  blocked: boolean;
  /** Service chains: packets their policy chain (`SMD_<h>_POL_<dir>`) dropped or refused. */
  dropped?: DropEntry;
}

/** The dropped-packet total of one policy chain, persisted under the policy chain's name. */
interface DropEntry {
  chain: string;
  total: ChainTotal;
}

/** The chains smd wants, by table. */
interface DesiredTables {
  filter: DesiredChain[];
  nat: DesiredChain[];
}

interface ServiceEntry {
  serviceId: string;
  address: string;
  opts: ServiceTrafficOptions;
  in: ChainEntry;
  out: ChainEntry;
  /** The desired chains, rebuilt only when the address, the policy or a block changes; `absent`: its chains it does not want. */
  rules?: { key: string; filter: DesiredChain[]; nat: DesiredChain[]; absent: string[] };
  /** The policy as the key of `rules` knows it. */
  policyKey: string;
}

export type { ServiceTrafficOptions, TrafficLimits, TrafficRow } from './types.js';

export class TrafficMonitor {
  private readonly db: Db;
  private readonly bus: EventBus;
  private readonly alerts: AlertStore;
  private readonly config: TrafficConfig;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly iptables: Iptables;
  private readonly shaper: Shaper;
  private readonly chains = new Map<string, ChainEntry>();
  private readonly services = new Map<string, ServiceEntry>();
  private stored = new Map<string, StoredRow>();
  private status: { ok: boolean; detail: string } = { ok: false, detail: 'not started' };
  private timer: NodeJS.Timeout | null = null;
  private lastPersist = 0;
  private started = false;
  private queue: Promise<unknown> = Promise.resolve();
  /** System and dispatch chains: they change only with the configuration. */
  private fixedChains: DesiredTables | null = null;
  private readonly store: TrafficStore;

  constructor(opts: TrafficMonitorOptions) {
    this.db = opts.db;
    this.bus = opts.bus;
    this.alerts = opts.alerts;
    this.config = opts.config;
    this.logger = opts.logger;
    this.now = opts.now ?? Date.now;
    this.iptables = new Iptables({ ...(opts.runner ? { runner: opts.runner } : {}), ...(opts.binaries ? { binaries: opts.binaries } : {}) });
    this.shaper = new Shaper({ ...(opts.runner ? { runner: opts.runner } : {}), ...(opts.binaries?.tc ? { tc: opts.binaries.tc } : {}) });
    this.store = new TrafficStore(this.db);
  }

  private get period(): Period {
    return this.config.period;
  }

  health(): { ok: boolean; detail: string } {
    return { ...this.status };
  }

  /** Loads stored totals, creates the system chains, takes a first sample and starts sampling. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    if (!this.config.enabled) {
      this.status = { ok: true, detail: 'traffic accounting disabled by configuration' };
      return;
    }
    this.loadStored();
    for (const d of ['in', 'out'] as const) this.register(systemChain(d), null, d);
    this.lastPersist = this.now();
    await this.sampleNow();
    this.timer = setInterval(() => {
      this.sampleNow().catch((err: unknown) => this.logger.error('traffic sample failed', { err }));
    }, this.config.sampleIntervalMs);
    this.timer.unref();
  }

  /** Stops sampling, takes a last sample (when possible) and persists every chain. */
  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (!this.config.enabled) return;
    await this.serial(async () => {
      await this.tick(false);
      this.persist();
    });
    this.iptables.close();
  }

  /**
   * Starts accounting (and limits and shaping) for a service at `address`. Continues from the
   * stored total of this period. Never fails for lack of iptables: health says why.
   */
  async addService(serviceId: string, address: string, opts: ServiceTrafficOptions): Promise<void> {
    await this.serial(async () => {
      const prev = this.services.get(serviceId);
      const entry: ServiceEntry = {
        serviceId,
        address,
        opts: { ...opts },
        in: prev?.in ?? this.register(serviceChain(serviceId, 'in'), serviceId, 'in'),
        out: prev?.out ?? this.register(serviceChain(serviceId, 'out'), serviceId, 'out'),
        policyKey: policyKeyOf(opts),
      };
      this.services.set(serviceId, entry);
      if (this.config.enabled && this.started) await this.tick(false);
      await this.shape(entry);
    });
  }

  /** Changes limits and speeds at once (a lifted limit unblocks, a lowered one blocks now). */
  async updateLimits(serviceId: string, limits: Partial<ServiceTrafficOptions>): Promise<void> {
    await this.serial(async () => {
      const entry = this.services.get(serviceId);
      if (!entry) return;
      entry.opts = { ...entry.opts, ...limits };
      entry.policyKey = policyKeyOf(entry.opts);
      if (this.config.enabled && this.started) await this.tick(false);
      await this.shape(entry);
    });
  }

  /** Deletes the service's chains, hooks and stored totals. */
  async removeService(serviceId: string): Promise<void> {
    await this.serial(async () => {
      const names = allServiceChains(serviceId);
      this.services.delete(serviceId);
      for (const n of names) {
        this.chains.delete(n);
        this.stored.delete(n);
        this.store.deleteChain(n);
      }
      if (!this.config.enabled) return;
      try {
        const current = await this.iptables.save(null);
        const plan = planRuleset(current, { filter: [], nat: [] }, { remove: names });
        if (plan.script) await this.iptables.restore(plan.script);
      } catch (err) {
        this.degrade(err);
      }
    });
  }

  /**
   * Removes chains and stored rows of every service not in `liveServiceIds` (and not added).
   * Call after adding the live services at start-up.
   */
  async reconcile(liveServiceIds: Set<string>): Promise<{ removed: string[] }> {
    return this.serial(async () => {
      const removed = new Set<string>();
      for (const id of [...this.services.keys()]) {
        if (liveServiceIds.has(id)) continue;
        const e = this.services.get(id)!;
        this.services.delete(id);
        this.chains.delete(e.in.chain);
        this.chains.delete(e.out.chain);
      }
      const dropChains = new Set([...this.chains.values()].map((c) => c.dropped?.chain));
      for (const r of this.store.serviceChains()) {
        if (liveServiceIds.has(r.serviceId) && (this.chains.has(r.chain) || dropChains.has(r.chain))) continue;
        this.store.deleteChain(r.chain);
        this.stored.delete(r.chain);
        removed.add(r.chain);
      }
      if (this.config.enabled) {
        try {
          const current = await this.iptables.save(null);
          const desired = this.desired();
          const plan = planRuleset(current, tablesFor(current, desired), { removeOthers: true });
          if (plan.script) await this.iptables.restore(plan.script);
          for (const c of plan.rebuilt) this.rebaseChain(c);
          for (const c of plan.removed) removed.add(c);
        } catch (err) {
          this.degrade(err);
        }
      }
      return { removed: [...removed].sort() };
    });
  }

  /** Samples every chain now (one iptables-save), applies limits, publishes `traffic`. */
  async sampleNow(): Promise<void> {
    if (!this.config.enabled) return;
    await this.serial(() => this.tick(true));
  }

  /** Persists every chain's total now, in one transaction. */
  persistNow(): void {
    this.persist();
  }

  get(serviceId?: string): TrafficRow[] {
    const rows: TrafficRow[] = [];
    for (const c of this.chains.values()) {
      if (serviceId !== undefined && c.serviceId !== serviceId) continue;
      rows.push(this.row(c));
    }
    return rows.sort((a, b) => (a.serviceId ?? '').localeCompare(b.serviceId ?? '') || a.direction.localeCompare(b.direction));
  }

  // ---- internals

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined); // the tail only orders the work: the caller gets the error from `next`
    return next;
  }

  private loadStored(): void {
    this.stored = this.store.loadAll();
  }

  private register(chain: string, serviceId: string | null, direction: Direction): ChainEntry {
    const existing = this.chains.get(chain);
    if (existing) return existing;
    const start = periodStartOf(this.now(), this.period);
    const total = resumeTotal(this.stored.get(chain), start);
    const entry: ChainEntry = { chain, serviceId, direction, total, blocked: false };
    if (serviceId !== null) {
      const pol = policyChain(serviceId, direction);
      entry.dropped = { chain: pol, total: resumeTotal(this.stored.get(pol), start) };
    }
    this.chains.set(chain, entry);
    return entry;
  }

  private limitOf(c: ChainEntry): number | null {
    if (c.serviceId === null) return null;
    const s = this.services.get(c.serviceId);
    const v = c.direction === 'in' ? s?.opts.dlLimit : s?.opts.ulLimit;
    return v !== null && v !== undefined && v > 0 ? v : null;
  }

  private row(c: ChainEntry): TrafficRow {
    return {
      chain: c.chain,
      serviceId: c.serviceId,
      direction: c.direction,
      bytes: Number(totalOf(c.total)),
      limit: this.limitOf(c),
      blocked: c.blocked,
      dropped: c.dropped ? Number(totalOf(c.dropped.total)) : 0,
      periodStart: c.total.periodStart,
    };
  }

  /** `blockedOf` gives the block wanted for a chain (default: the one in place). */
  private desired(blockedOf: (c: ChainEntry) => boolean = (c) => c.blocked): DesiredTables & { absent: string[] } {
    const local = this.config.localSubnets;
    if (!this.fixedChains) {
      const dispatch = policyDispatch();
      // SMD_POLICY last: its hook, inserted first in FORWARD after the others, runs before counting.
      this.fixedChains = { filter: [systemChainRules('in', local), systemChainRules('out', local), forwardChainRules('in', local), forwardChainRules('out', local), dispatch.filter], nat: [dispatch.nat] };
    }
    const filter: DesiredChain[] = [...this.fixedChains.filter];
    const nat: DesiredChain[] = [...this.fixedChains.nat];
    const absent: string[] = [];
    for (const s of this.services.values()) {
      const bin = blockedOf(s.in);
      const bout = blockedOf(s.out);
      const key = `${s.address} ${bin} ${bout} ${s.policyKey}`;
      if (s.rules?.key !== key) {
        const policy = s.opts.policy ? servicePolicyChains(s.serviceId, s.address, s.opts.policy) : { filter: [], nat: [] };
        const own = [serviceChainRules(s.in.chain, 'in', s.address, bin), serviceChainRules(s.out.chain, 'out', s.address, bout), ...policy.filter];
        const wanted = new Set([...own, ...policy.nat].map((c) => c.name));
        s.rules = { key, filter: own, nat: policy.nat, absent: allServiceChains(s.serviceId).filter((n) => !wanted.has(n)) };
      }
      filter.push(...s.rules.filter);
      nat.push(...s.rules.nat);
      absent.push(...s.rules.absent);
    }
    return { filter, nat, absent };
  }

  private degrade(err: unknown): void {
    const e = toSmError(err);
    const detail = `iptables unavailable: ${e.message}`;
    if (this.status.ok || this.status.detail !== detail) this.logger.warn('traffic accounting unavailable', { err: e });
    this.status = { ok: false, detail };
  }

  /**
   * One sample: read all counters, advance the totals (period, resets), decide blocks, bring the
   * chains to what they should be (one restore, only if something differs), alert on crossings,
   * publish, persist when due. A block (or unblock) counts only once its restore succeeded; a
   * failed restore changes nothing and the next sample tries again.
   */
  private async tick(publish: boolean): Promise<void> {
    const now = this.now();
    const start = periodStartOf(now, this.period);
    let saved: SavedRuleset;
    try {
      saved = await this.iptables.save(null);
    } catch (err) {
      this.degrade(err);
      return;
    }
    const current = saved.get('filter');
    const counters = countingBytes(current);
    const drops = droppedPackets(current);
    const crossed: ChainEntry[] = [];
    const wanted = new Map<ChainEntry, boolean>();
    for (const c of this.chains.values()) {
      const counter = counters.get(c.chain);
      if (counter !== undefined) c.total = observe(c.total, counter, start);
      else if (c.total.periodStart !== start) c.total = startTotal(0n, start);
      if (c.dropped) {
        const d = drops.get(c.dropped.chain);
        if (d !== undefined) c.dropped.total = observe(c.dropped.total, d, start);
        else if (c.dropped.total.periodStart !== start) c.dropped.total = startTotal(0n, start);
      }
      const limit = this.limitOf(c);
      const over = limit !== null && totalOf(c.total) >= BigInt(limit);
      if (over && !c.blocked) crossed.push(c);
      wanted.set(c, over);
    }
    let applied = false;
    try {
      const desired = this.desired((c) => wanted.get(c) ?? c.blocked);
      const plan = planRuleset(saved, tablesFor(saved, desired), { remove: desired.absent });
      if (plan.script) {
        await this.iptables.restore(plan.script);
        for (const name of plan.rebuilt) this.rebaseChain(name);
      }
      applied = true;
      if (!this.status.ok) this.logger.info('traffic accounting available');
      this.status = { ok: true, detail: `${this.chains.size} chains, sampled ${new Date(now).toISOString()}` };
    } catch (err) {
      this.degrade(err);
    }
    if (applied) {
      for (const [c, w] of wanted) c.blocked = w;
      for (const c of crossed) this.alert(c, now);
    }
    if (publish) this.bus.publish('traffic', { samples: this.get() });
    if (now - this.lastPersist >= this.config.persistIntervalMs) this.persist();
  }

  private rebaseChain(name: string): void {
    const c = this.chains.get(name);
    if (c) c.total = rebase(c.total);
    else for (const e of this.chains.values()) if (e.dropped?.chain === name) e.dropped.total = rebase(e.dropped.total);
  }

  private alert(c: ChainEntry, now: number): void {
    const row = this.row(c);
    if (!alertLimit(this.alerts, row, this.period, now)) return; // already told this period (before a restart)
    this.logger.warn('traffic limit reached', { serviceId: c.serviceId, ...limitPayload(row) });
    const event: EventMap['traffic'] & { kind: string } = { samples: [row], kind: 'limit' };
    this.bus.publish('traffic', event);
  }

  private persist(): void {
    const now = this.now();
    const rowOf = (chain: string, total: ChainTotal, c: ChainEntry) => ({
      chain,
      time: now,
      value: totalOf(total),
      serviceId: c.serviceId,
      direction: c.direction,
      periodStart: total.periodStart,
      counter: total.last === null ? null : total.last.toString(),
    });
    const rows = [];
    for (const c of this.chains.values()) {
      rows.push(rowOf(c.chain, c.total, c));
      // Dropped packets only once there were some: no row for services without a policy.
      if (c.dropped && (c.dropped.total.last !== null || totalOf(c.dropped.total) > 0n)) rows.push(rowOf(c.dropped.chain, c.dropped.total, c));
    }
    this.store.saveAll(rows);
    this.lastPersist = now;
  }

  private async shape(entry: ServiceEntry): Promise<void> {
    const { hostVeth, netnsName, dlSpeed, ulSpeed } = entry.opts;
    if (!hostVeth || !netnsName) return;
    try {
      await this.shaper.apply({ hostVeth, netnsName }, { dlSpeed, ulSpeed });
    } catch (err) {
      this.logger.warn('traffic shaping not applied', { serviceId: entry.serviceId, err });
    }
  }
}

/**
 * The tables to plan: filter always; nat when a service exposes a port or the kernel already has a
 * nat table (made by smd's MASQUERADE), so that a device without NAT support keeps its accounting.
 */
function tablesFor(saved: SavedRuleset, desired: DesiredTables): Record<string, DesiredChain[]> {
  const nat = desired.nat.length > 1 || saved.has('nat');
  return nat ? { filter: desired.filter, nat: desired.nat } : { filter: desired.filter };
}

/** What identifies a policy for the rule cache: its JSON (absent and empty alike). */
function policyKeyOf(opts: ServiceTrafficOptions): string {
  return opts.policy ? JSON.stringify(opts.policy) : '';
}
