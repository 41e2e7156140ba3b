/**
 * Alert counts by (service, source, kind), read from the `alerts` table: alerts are stored and
 * never deleted, so the counts carry on across smd restarts like any persisted counter. The first
 * read counts the whole table (one GROUP BY); later reads only the rows after the highest id seen,
 * through the primary key, so a sample costs nothing when no alert came.
 */
import type Database from 'better-sqlite3';
import type { Db } from '../db/database.js';

export interface AlertCount {
  serviceId: string | null;
  source: string;
  kind: string;
  count: number;
}

interface Row {
  serviceId: string | null;
  source: string;
  kind: string;
  n: number;
  maxId: number;
}

export class AlertCounts {
  private readonly since: Database.Statement<[number], Row>;
  private readonly counts = new Map<string, AlertCount>();
  private lastId = 0;

  constructor(db: Db) {
    this.since = db.$client.prepare<[number], Row>(
      'SELECT serviceId, source, kind, COUNT(*) AS n, MAX(id) AS maxId FROM alerts WHERE id > ? GROUP BY serviceId, source, kind',
    );
  }

  /** Counts up to now, sorted by service, source and kind. */
  read(): AlertCount[] {
    for (const r of this.since.all(this.lastId)) {
      const key = `${r.serviceId ?? ''}\u0000${r.source}\u0000${r.kind}`;
      const c = this.counts.get(key);
      if (c) c.count += r.n;
      else this.counts.set(key, { serviceId: r.serviceId, source: r.source, kind: r.kind, count: r.n });
      if (r.maxId > this.lastId) this.lastId = r.maxId;
    }
    return [...this.counts.values()].sort((a, b) => cmp(a.serviceId ?? '', b.serviceId ?? '') || cmp(a.source, b.source) || cmp(a.kind, b.kind));
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
