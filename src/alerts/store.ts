import { and, desc, eq, gte, type SQL } from 'drizzle-orm';
import type { Db } from '../db/database.js';
import { alerts } from '../db/schema.js';
import type { EventBus } from '../events/bus.js';

export type AlertSource = 'monitoring' | 'journal' | 'traffic';

/** What `alerts.list` returns. */
export interface Alert {
  id: number;
  /** ms since the epoch */
  time: number;
  source: string;
  serviceId: string | null;
  kind: string;
  message: string;
  payload: Record<string, unknown>;
}

export interface NewAlert {
  time: number;
  source: AlertSource;
  serviceId: string | null;
  kind: string;
  message: string;
  payload?: Record<string, unknown>;
}

type Tx = Pick<Db, 'insert'>;

/** The `alerts` table: every alert is stored, then published on the bus (topic `alert`). */
export class AlertStore {
  constructor(private readonly deps: { db: Db; bus: EventBus }) {}

  /**
   * Inserts alerts inside `tx` (the caller's transaction, so that e.g. the journal cursor moves
   * with them) and returns them; call `publish` after the transaction committed.
   */
  insertIn(tx: Tx, items: readonly NewAlert[]): Alert[] {
    return items.map((a) => {
      const payload = a.payload ?? {};
      const row = tx
        .insert(alerts)
        .values({ time: a.time, source: a.source, serviceId: a.serviceId, kind: a.kind, message: a.message, payload: JSON.stringify(payload) })
        .returning({ id: alerts.id })
        .get();
      return { id: row.id, time: a.time, source: a.source, serviceId: a.serviceId, kind: a.kind, message: a.message, payload };
    });
  }

  publish(list: readonly Alert[]): void {
    for (const a of list) this.deps.bus.publish('alert', { id: a.id, serviceId: a.serviceId, kind: a.kind, message: a.message });
  }

  /** Stores and publishes in one transaction. */
  add(items: readonly NewAlert[]): Alert[] {
    if (items.length === 0) return [];
    const stored = this.deps.db.transaction((tx) => this.insertIn(tx, items));
    this.publish(stored);
    return stored;
  }

  /** Alerts at or after `since` (ms), optionally of one service: the newest `limit`, oldest first. */
  list(q: { since?: number; serviceId?: string; source?: string; limit?: number } = {}): Alert[] {
    const conds: SQL[] = [];
    if (q.since !== undefined) conds.push(gte(alerts.time, q.since));
    if (q.serviceId !== undefined) conds.push(eq(alerts.serviceId, q.serviceId));
    if (q.source !== undefined) conds.push(eq(alerts.source, q.source));
    const rows = this.deps.db
      .select()
      .from(alerts)
      .where(conds.length ? and(...conds) : undefined)
      .orderBy(desc(alerts.time), desc(alerts.id))
      .limit(q.limit ?? 1000)
      .all()
      .reverse();
    return rows.map((r) => ({ ...r, payload: safeJson(r.payload) }));
  }
}

function safeJson(text: string): Record<string, unknown> {
  try {
    const v = JSON.parse(text) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : { value: v };
  } catch {
    return { raw: text };
  }
}
