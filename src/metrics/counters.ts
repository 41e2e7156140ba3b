/**
 * Figures smd keeps for the metrics only, in memory: RPC requests and their latencies, and
 * operation outcomes since the process started. They start at 0 with every smd process, which is
 * what Prometheus expects of a counter after a restart (rate() and increase() treat the drop as a
 * reset). Figures that smd persists anyway (traffic totals, alerts) are read from where they are
 * stored instead, so that they carry on across restarts (collector.ts).
 */
import type { EventBus } from '../events/bus.js';

/** Upper bounds (seconds) of the RPC latency histogram: from a cached read to a waited install. */
export const RPC_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120];

export interface RpcMethodStats {
  /** Requests by outcome: `ok` or the error's code (NOT_FOUND, INVALID_PARAMS, ...). */
  outcomes: Map<string, number>;
  /** Observations per bucket (RPC_BUCKETS.length + 1, the last above the highest bound). */
  buckets: number[];
  sumSeconds: number;
}

/**
 * Requests per method. `method` is null for requests that name no registered method (unknown
 * names, invalid requests, parse errors), which are counted under one label value so that a
 * client cannot grow the label set without bound.
 */
export class RpcStats {
  static readonly OTHER = 'other';
  private readonly methods = new Map<string, RpcMethodStats>();

  observe(method: string | null, outcome: string, seconds: number): void {
    const name = method ?? RpcStats.OTHER;
    let s = this.methods.get(name);
    if (!s) this.methods.set(name, (s = { outcomes: new Map(), buckets: new Array<number>(RPC_BUCKETS.length + 1).fill(0), sumSeconds: 0 }));
    s.outcomes.set(outcome, (s.outcomes.get(outcome) ?? 0) + 1);
    let i = 0;
    while (i < RPC_BUCKETS.length && seconds > RPC_BUCKETS[i]!) i++;
    s.buckets[i]!++;
    s.sumSeconds += seconds;
  }

  /** Methods in name order. */
  entries(): [string, RpcMethodStats][] {
    return [...this.methods.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  }
}

type OperationEvent = { id: string; kind: string; state: string };

const FINISHED = new Set(['succeeded', 'failed']);
/** Finished ids remembered so that a repeated event of a finished operation is not counted twice. */
const REMEMBER_FINISHED = 1000;

/**
 * Operation outcomes from the `operation` events: a finished operation counts once under
 * (kind, state); operations under way are kept by id for the in-progress gauge.
 */
export class OperationStats {
  private readonly finished = new Map<string, number>();
  private readonly active = new Map<string, { kind: string; state: string }>();
  private readonly done = new Set<string>();
  private off: (() => void) | null = null;

  /** Subscribes to the bus; returns this. */
  listen(bus: EventBus): this {
    this.off ??= bus.subscribe('operation', (e) => this.observe(e));
    return this;
  }

  close(): void {
    this.off?.();
    this.off = null;
  }

  observe(e: OperationEvent): void {
    if (this.done.has(e.id)) return;
    if (!FINISHED.has(e.state)) {
      this.active.set(e.id, { kind: e.kind, state: e.state });
      return;
    }
    this.active.delete(e.id);
    this.done.add(e.id);
    if (this.done.size > REMEMBER_FINISHED) this.done.delete(this.done.values().next().value!);
    const key = `${e.kind}\u0000${e.state}`;
    this.finished.set(key, (this.finished.get(key) ?? 0) + 1);
  }

  /** Finished operations by kind and state, sorted. */
  finishedCounts(): { kind: string; state: string; count: number }[] {
    return [...this.finished.entries()]
      .map(([k, count]) => {
        const [kind, state] = k.split('\u0000') as [string, string];
        return { kind, state, count };
      })
      .sort((a, b) => cmp(a.kind, b.kind) || cmp(a.state, b.state));
  }

  /** Operations pending or running now, by kind and state. */
  inProgress(): { kind: string; state: string; count: number }[] {
    const m = new Map<string, number>();
    for (const o of this.active.values()) m.set(`${o.kind}\u0000${o.state}`, (m.get(`${o.kind}\u0000${o.state}`) ?? 0) + 1);
    return [...m.entries()]
      .map(([k, count]) => {
        const [kind, state] = k.split('\u0000') as [string, string];
        return { kind, state, count };
      })
      .sort((a, b) => cmp(a.kind, b.kind) || cmp(a.state, b.state));
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
