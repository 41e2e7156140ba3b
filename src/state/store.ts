import { and, desc, eq, inArray, notInArray } from 'drizzle-orm';
import type { Db } from '../db/database.js';
import { desiredState } from '../db/schema.js';
import type { DesiredState, ItemResult } from './plan.js';

type Row = typeof desiredState.$inferSelect;
export type ApplyState = Row['state'];

export interface StoredApply {
  operationId: string;
  version: number;
  hash: string;
  desired: DesiredState;
  state: ApplyState;
  items: ItemResult[];
  layerDigests: string[];
  error: { code: string; message: string } | null;
  createdAt: number;
  finishedAt: number | null;
}

/** Applies kept beside the last succeeded one (older rows are deleted). */
const KEEP = 20;

/** The `desired_state` table: one row per apply, written in one transaction per change. */
export class DesiredStateStore {
  constructor(private readonly db: Db) {}

  begin(operationId: string, desired: DesiredState, hash: string): void {
    const now = Date.now();
    this.db.insert(desiredState).values({ operationId, version: desired.version, hash, desired: JSON.stringify(desired), state: 'running', createdAt: now, updatedAt: now }).run();
  }

  /** The layer digests the apply installs (kept by layer prunes while it runs and once it succeeded). */
  setLayers(operationId: string, digests: string[]): void {
    this.db.update(desiredState).set({ layerDigests: JSON.stringify(digests), updatedAt: Date.now() }).where(eq(desiredState.operationId, operationId)).run();
  }

  finish(operationId: string, state: 'succeeded' | 'failed', items: ItemResult[], error: { code: string; message: string } | null = null): void {
    const now = Date.now();
    this.db.transaction((tx) => {
      tx.update(desiredState)
        .set({ state, items: JSON.stringify(items), error: error ? JSON.stringify(error) : null, finishedAt: now, updatedAt: now })
        .where(eq(desiredState.operationId, operationId))
        .run();
      const keep = tx
        .select({ id: desiredState.operationId })
        .from(desiredState)
        .orderBy(desc(desiredState.createdAt))
        .limit(KEEP)
        .all()
        .map((r) => r.id);
      const last = this.lastSucceededRow(tx as unknown as Db);
      if (last) keep.push(last.operationId);
      tx.delete(desiredState).where(and(notInArray(desiredState.operationId, keep), inArray(desiredState.state, ['succeeded', 'failed']))).run();
    });
  }

  /**
   * Start-up: applies left `running` by a crash. Their operations' groups were finished (when
   * committed) or undone by the services' reconciliation; the row says which.
   */
  settleInterrupted(outcome: (operationId: string) => 'succeeded' | 'failed'): string[] {
    const rows = this.db.select().from(desiredState).where(eq(desiredState.state, 'running')).all();
    for (const r of rows) {
      const state = outcome(r.operationId);
      this.finish(r.operationId, state, [], state === 'failed' ? { code: 'INTERNAL', message: 'interrupted: smd stopped during the apply; it was rolled back at start' } : null);
    }
    return rows.map((r) => r.operationId);
  }

  /** The newest apply (what was asked last), or null. */
  latest(): StoredApply | null {
    const r = this.db.select().from(desiredState).orderBy(desc(desiredState.createdAt)).limit(1).get();
    return r ? toStored(r) : null;
  }

  lastSucceeded(): StoredApply | null {
    const r = this.lastSucceededRow(this.db);
    return r ? toStored(r) : null;
  }

  private lastSucceededRow(db: Db): Row | undefined {
    return db.select().from(desiredState).where(eq(desiredState.state, 'succeeded')).orderBy(desc(desiredState.createdAt)).limit(1).get();
  }
}

function toStored(r: Row): StoredApply {
  return {
    operationId: r.operationId,
    version: r.version,
    hash: r.hash,
    desired: JSON.parse(r.desired) as DesiredState,
    state: r.state,
    items: JSON.parse(r.items) as ItemResult[],
    layerDigests: JSON.parse(r.layerDigests) as string[],
    error: r.error ? (JSON.parse(r.error) as StoredApply['error']) : null,
    createdAt: r.createdAt,
    finishedAt: r.finishedAt,
  };
}
