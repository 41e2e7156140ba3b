/**
 * The `trafficmonitor` table: one row per chain with its total of the current period and the
 * kernel counter it was taken at, so that a restart continues where it stopped. Plus the pure
 * rule of how a stored row resumes (`resumeTotal`).
 */
import type Database from 'better-sqlite3';
import type { Db } from '../db/database.js';
import { startTotal, type ChainTotal } from './counters.js';
import type { Direction } from './naming.js';

export interface StoredRow {
  chain: string;
  value: bigint | null;
  periodStart: bigint | null;
  counter: string | null;
}

export interface PersistRow {
  chain: string;
  time: number;
  value: bigint;
  serviceId: string | null;
  direction: Direction;
  periodStart: number;
  counter: string | null;
}

/**
 * Where a chain's total starts: the stored total when it belongs to the period starting at
 * `periodStart` (and the counter stored with it, where the kernel count resumes); 0 otherwise.
 * No row at all: the chain is smd's own and everything its counter holds is unpersisted traffic.
 */
export function resumeTotal(s: StoredRow | undefined, periodStart: number): ChainTotal {
  const current = s !== undefined && s.value !== null && s.periodStart !== null && Number(s.periodStart) === periodStart;
  const base = current ? s.value! : 0n;
  const counter = !s ? 0n : current && s.counter !== null && /^\d+$/.test(s.counter) ? BigInt(s.counter) : null;
  return startTotal(base < 0n ? 0n : base, periodStart, counter);
}

export class TrafficStore {
  private readonly stmts: { upsert: Database.Statement; deleteChain: Database.Statement; all: Database.Statement; serviceChains: Database.Statement };

  constructor(private readonly db: Db) {
    const sqlite = db.$client;
    this.stmts = {
      upsert: sqlite.prepare(
        `INSERT INTO trafficmonitor (chain, time, value, serviceId, direction, periodStart, counter, createdAt, updatedAt)
         VALUES (@chain, @time, @value, @serviceId, @direction, @periodStart, @counter, @time, @time)
         ON CONFLICT(chain) DO UPDATE SET time = excluded.time, value = excluded.value, serviceId = excluded.serviceId,
           direction = excluded.direction, periodStart = excluded.periodStart, counter = excluded.counter, updatedAt = excluded.updatedAt`,
      ),
      deleteChain: sqlite.prepare('DELETE FROM trafficmonitor WHERE chain = ?'),
      all: sqlite.prepare('SELECT chain, value, periodStart, counter FROM trafficmonitor').safeIntegers(true),
      serviceChains: sqlite.prepare('SELECT chain, serviceId FROM trafficmonitor WHERE serviceId IS NOT NULL'),
    };
  }

  /** Every stored row by chain (exact BigInt values). */
  loadAll(): Map<string, StoredRow> {
    return new Map((this.stmts.all.all() as StoredRow[]).map((r) => [r.chain, r]));
  }

  /** The chains stored for services. */
  serviceChains(): { chain: string; serviceId: string }[] {
    return this.stmts.serviceChains.all() as { chain: string; serviceId: string }[];
  }

  deleteChain(chain: string): void {
    this.stmts.deleteChain.run(chain);
  }

  /** Every row in one transaction. */
  saveAll(rows: readonly PersistRow[]): void {
    this.db.$client.transaction(() => {
      for (const r of rows) this.stmts.upsert.run(r);
    })();
  }
}
