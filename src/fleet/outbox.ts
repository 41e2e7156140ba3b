/**
 * The fleet outbox (SPEC 14): what must reach the fleet — the report, events, rpc replies — is
 * written to SQLite first and sent from there in `id` order, so a broker that is unreachable
 * (or an smd restart meanwhile) loses nothing but what the bound drops. A row is deleted when
 * the broker acknowledged it (QoS 1: at-least-once; the consumer de-duplicates events by `id`).
 *
 * Drop policy, applied on every enqueue in the same transaction:
 *  - a report replaces every older report still waiting (`reported` is retained: only the
 *    latest means anything), so there is at most one report and it is never dropped;
 *  - above `maxMessages`, the oldest events go first, then the oldest rpc replies.
 */
import type Database from 'better-sqlite3';
import type { Db } from '../db/database.js';

export type OutboxKind = 'report' | 'event' | 'reply';

export interface OutboxMessage {
  id: number;
  kind: OutboxKind;
  /** Topic name below `<topicPrefix>/<deviceId>/`. */
  topic: string;
  payload: string;
  retain: boolean;
  createdAt: number;
}

export interface OutboxCounts {
  report: number;
  event: number;
  reply: number;
}

/** How many of the oldest events and replies must go so that at most `max` rows stay. Pure. */
export function dropPlan(counts: OutboxCounts, max: number): { events: number; replies: number } {
  let over = counts.report + counts.event + counts.reply - Math.max(1, max);
  if (over <= 0) return { events: 0, replies: 0 };
  const events = Math.min(counts.event, over);
  over -= events;
  const replies = Math.min(counts.reply, over);
  return { events, replies };
}

export interface OutboxStats extends OutboxCounts {
  depth: number;
  /** Rows dropped by the bound since this smd started. */
  dropped: number;
  oldestAt: number | null;
}

export class Outbox {
  private readonly sqlite: Database.Database;
  private readonly st: Record<'insert' | 'delReports' | 'counts' | 'dropOldest' | 'after' | 'del' | 'oldest', Database.Statement>;
  private droppedCount = 0;

  constructor(
    db: Db,
    private readonly opts: { maxMessages: number; now?: () => number },
  ) {
    this.sqlite = db.$client;
    const s = this.sqlite;
    this.st = {
      insert: s.prepare('INSERT INTO fleet_outbox (kind, topic, payload, retain, createdAt) VALUES (?, ?, ?, ?, ?)'),
      delReports: s.prepare("DELETE FROM fleet_outbox WHERE kind = 'report' AND id < ?"),
      counts: s.prepare('SELECT kind, COUNT(*) AS n FROM fleet_outbox GROUP BY kind'),
      dropOldest: s.prepare('DELETE FROM fleet_outbox WHERE id IN (SELECT id FROM fleet_outbox WHERE kind = ? ORDER BY id LIMIT ?)'),
      after: s.prepare('SELECT id, kind, topic, payload, retain, createdAt FROM fleet_outbox WHERE id > ? ORDER BY id LIMIT ?'),
      del: s.prepare('DELETE FROM fleet_outbox WHERE id = ?'),
      oldest: s.prepare('SELECT MIN(createdAt) AS t FROM fleet_outbox'),
    };
  }

  /** Stores one message (and applies the drop policy); returns its id, the order it is sent in. */
  enqueue(kind: OutboxKind, topic: string, payload: string, retain = false): { id: number; dropped: number } {
    const now = this.opts.now?.() ?? Date.now();
    return this.sqlite.transaction(() => {
      const id = Number(this.st.insert.run(kind, topic, payload, retain ? 1 : 0, now).lastInsertRowid);
      if (kind === 'report') this.st.delReports.run(id);
      const plan = dropPlan(this.countsNow(), this.opts.maxMessages);
      let dropped = 0;
      if (plan.events > 0) dropped += this.st.dropOldest.run('event', plan.events).changes;
      if (plan.replies > 0) dropped += this.st.dropOldest.run('reply', plan.replies).changes;
      this.droppedCount += dropped;
      return { id, dropped };
    })();
  }

  /** The next messages to send, oldest first, after `afterId`. */
  next(afterId: number, limit: number): OutboxMessage[] {
    return (this.st.after.all(afterId, limit) as (Omit<OutboxMessage, 'retain'> & { retain: number })[]).map((r) => ({ ...r, retain: r.retain === 1 }));
  }

  /** The broker acknowledged it. Deleting a row already replaced or dropped is a no-op. */
  delivered(id: number): void {
    this.st.del.run(id);
  }

  stats(): OutboxStats {
    const c = this.countsNow();
    const oldest = (this.st.oldest.get() as { t: number | null }).t;
    return { ...c, depth: c.report + c.event + c.reply, dropped: this.droppedCount, oldestAt: oldest };
  }

  private countsNow(): OutboxCounts {
    const c: OutboxCounts = { report: 0, event: 0, reply: 0 };
    for (const r of this.st.counts.all() as { kind: OutboxKind; n: number }[]) c[r.kind] = r.n;
    return c;
  }
}
