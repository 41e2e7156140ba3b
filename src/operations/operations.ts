import { randomUUID } from 'node:crypto';
import { and, desc, eq, inArray } from 'drizzle-orm';
import type { Db } from '../db/database.js';
import { operations, operationSteps } from '../db/schema.js';
import type { EventBus } from '../events/bus.js';
import { notFound, toSmError } from '../errors.js';
import { KeyedLock } from '../lock.js';
import type { Logger } from '../log.js';

export type OperationState = 'pending' | 'running' | 'succeeded' | 'failed';

/** The Operation object clients see (SPEC section 7). */
export interface Operation {
  id: string;
  kind: string;
  target: string | null;
  state: OperationState;
  progress: number;
  step: string | null;
  error: { code: string; message: string; details?: unknown } | null;
  /** What was asked, plus what the action recorded to be undone or finished after a crash. */
  inputs: Record<string, unknown>;
  result: unknown;
  /** Bytes of a running download (not stored: a restarted fetch resumes from what is on disk). */
  transfer?: Transfer;
  createdAt: number;
  updatedAt: number;
}

export interface Transfer {
  bytesDone: number;
  bytesTotal: number;
}

export interface OperationStep {
  name: string;
  state: 'running' | 'succeeded' | 'failed';
  progress: number;
  message: string | null;
  time: number;
}

/** What a running action uses to report where it is. */
export interface OperationHandle {
  readonly id: string;
  /** Ends the current step (succeeded) and begins the next. */
  step(name: string, message?: string): void;
  /**
   * Overall progress 0..100; persisted and published when the whole percent changes. A download
   * also passes its bytes, published at most every TRANSFER_PUBLISH_MS.
   */
  progress(percent: number, transfer?: Transfer): void;
  /** Durably adds to the operation's inputs what start-up recovery needs (e.g. the previous version). */
  record(extra: Record<string, unknown>): void;
  /** Names the target once known (e.g. the service id read from the image). */
  setTarget(target: string): void;
}

export interface StartOptions<T> {
  kind: string;
  target?: string | null;
  inputs?: Record<string, unknown>;
  /** Operations with the same key run one after another, in order of arrival. */
  lockKey?: string;
  work(op: OperationHandle): Promise<T>;
}

type Row = typeof operations.$inferSelect;

/**
 * Long actions as persisted operations: every state change is one transaction and one
 * `operation` event, so a client (or a restart) always knows what was asked and how it ended.
 */
export class Operations {
  private readonly locks = new KeyedLock();
  private readonly active = new Set<Promise<unknown>>();
  private readonly transfers = new Map<string, Transfer>();

  constructor(
    private readonly db: Db,
    private readonly bus: EventBus,
    private readonly logger: Logger,
    /**
     * Fault injection for crash-consistency tests: `kind:step` (e.g. `services.install:start`)
     * makes smd kill itself with SIGKILL as that step begins; `kind:step:SIGSTOP` freezes it
     * there instead (the device tests cut the power while it is frozen). Set from SMD_CRASH_AT.
     */
    private readonly crashAt: string | null = null,
  ) {}

  /** Operations left pending or running by a crash are failed with the reason. Returns how many. */
  failInterrupted(reason = 'interrupted: smd stopped before this operation finished'): Operation[] {
    const stale = this.db.select().from(operations).where(inArray(operations.state, ['pending', 'running'])).all();
    const now = Date.now();
    for (const row of stale) {
      this.db.transaction((tx) => {
        tx.update(operations)
          .set({ state: 'failed', error: JSON.stringify({ code: 'INTERNAL', message: reason }), updatedAt: now })
          .where(eq(operations.id, row.id))
          .run();
        tx.update(operationSteps).set({ state: 'failed', message: reason, time: now }).where(and(eq(operationSteps.operationId, row.id), eq(operationSteps.state, 'running'))).run();
      });
      this.publish(this.getRow(row.id));
    }
    return stale.map((r) => this.toOperation(this.getRow(r.id)));
  }

  /** Records the operation and runs its work in the background. Returns it as created. */
  start<T>(opts: StartOptions<T>): Operation {
    const now = Date.now();
    const id = randomUUID();
    const queued = opts.lockKey !== undefined && this.locks.busy(opts.lockKey);
    this.db
      .insert(operations)
      .values({ id, kind: opts.kind, target: opts.target ?? null, state: queued ? 'pending' : 'running', progress: 0, inputs: JSON.stringify(opts.inputs ?? {}), createdAt: now, updatedAt: now })
      .run();
    const created = this.getRow(id);
    this.publish(created);

    const runIt = async () => {
      if (queued) this.update(id, { state: 'running' });
      await this.execute(id, opts.work);
    };
    const done = opts.lockKey !== undefined ? this.locks.run(opts.lockKey, runIt) : runIt();
    this.active.add(done);
    void done.finally(() => this.active.delete(done));
    return this.toOperation(created);
  }

  get(id: string): Operation {
    return this.toOperation(this.getRow(id));
  }

  steps(id: string): OperationStep[] {
    this.getRow(id);
    return this.db
      .select()
      .from(operationSteps)
      .where(eq(operationSteps.operationId, id))
      .orderBy(operationSteps.id)
      .all()
      .map((s) => ({ name: s.name, state: s.state, progress: s.progress, message: s.message, time: s.time }));
  }

  list(filter: { state?: OperationState; limit?: number } = {}): Operation[] {
    const q = this.db.select().from(operations);
    const rows = (filter.state ? q.where(eq(operations.state, filter.state)) : q).orderBy(desc(operations.createdAt)).limit(filter.limit ?? 200).all();
    return rows.map((r) => this.toOperation(r));
  }

  /** Resolves with the operation once finished, or as it is when the timeout passes. */
  async wait(id: string, timeoutMs: number): Promise<Operation> {
    const current = this.get(id);
    if (isFinished(current.state)) return current;
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        unsubscribe();
        resolve(this.get(id));
      };
      const unsubscribe = this.bus.subscribe('operation', (ev) => {
        if (ev.id === id && isFinished(ev.state as OperationState)) finish();
      });
      const timer = setTimeout(finish, timeoutMs);
      // The state may have changed between the read above and the subscription.
      if (isFinished(this.get(id).state)) finish();
    });
  }

  /**
   * Retention, so a device that runs for years does not keep every operation: finished ones
   * beyond the newest `keep` and older than `maxAgeMs` are deleted (their steps cascade).
   */
  prune(opts: { keep: number; maxAgeMs: number; now?: number }): number {
    const cutoff = (opts.now ?? Date.now()) - opts.maxAgeMs;
    return this.db.$client
      .prepare(
        `DELETE FROM operations WHERE state IN ('succeeded', 'failed') AND updatedAt < ?
           AND id NOT IN (SELECT id FROM operations ORDER BY createdAt DESC LIMIT ?)`,
      )
      .run(cutoff, opts.keep).changes;
  }

  /** Waits for every running operation's work to settle (used at shutdown and in tests). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.active]);
  }

  private async execute<T>(id: string, work: (op: OperationHandle) => Promise<T>): Promise<void> {
    let lastPercent = 0;
    let lastTransferPublish = 0;
    let currentStep: number | null = null;
    const endStep = (state: 'succeeded' | 'failed', message?: string) => {
      if (currentStep === null) return;
      this.db
        .update(operationSteps)
        .set({ state, time: Date.now(), ...(message !== undefined ? { message } : {}) })
        .where(eq(operationSteps.id, currentStep))
        .run();
      currentStep = null;
    };
    const handle: OperationHandle = {
      id,
      step: (name, message) => {
        if (this.crashAt !== null) {
          const [kind, step, signal = 'SIGKILL'] = this.crashAt.split(':');
          if (`${kind}:${step}` === `${this.getRow(id).kind}:${name}`) process.kill(process.pid, signal as NodeJS.Signals);
        }
        this.db.transaction(() => {
          endStep('succeeded');
          currentStep = Number(
            this.db.insert(operationSteps).values({ operationId: id, name, state: 'running', progress: 0, message: message ?? null, time: Date.now() }).run().lastInsertRowid,
          );
          this.update(id, { step: name });
        });
      },
      record: (extra) => {
        const row = this.getRow(id);
        this.db
          .update(operations)
          .set({ inputs: JSON.stringify({ ...(JSON.parse(row.inputs) as Record<string, unknown>), ...extra }), updatedAt: Date.now() })
          .where(eq(operations.id, id))
          .run();
      },
      setTarget: (target) => {
        this.db.update(operations).set({ target, updatedAt: Date.now() }).where(eq(operations.id, id)).run();
        this.publish(this.getRow(id));
      },
      progress: (percent, transfer) => {
        const p = Math.max(0, Math.min(100, Math.floor(percent)));
        let due = p !== lastPercent;
        if (transfer) {
          this.transfers.set(id, { bytesDone: transfer.bytesDone, bytesTotal: transfer.bytesTotal });
          const now = Date.now();
          if (now - lastTransferPublish >= TRANSFER_PUBLISH_MS || transfer.bytesDone === transfer.bytesTotal) {
            lastTransferPublish = now;
            due = true;
          }
        }
        if (!due) return;
        lastPercent = p;
        this.update(id, { progress: p });
      },
    };
    try {
      const result = await work(handle).finally(() => this.transfers.delete(id));
      this.db.transaction(() => {
        endStep('succeeded');
        this.update(id, { state: 'succeeded', progress: 100, result: JSON.stringify(result ?? null) });
      });
    } catch (err) {
      const e = toSmError(err);
      if (e.code === 'INTERNAL') this.logger.error('operation failed', { id, err: e });
      this.db.transaction(() => {
        endStep('failed', e.message);
        this.update(id, { state: 'failed', error: JSON.stringify({ code: e.code, message: e.message, ...(e.details ? { details: e.details } : {}) }) });
      });
    }
  }

  private update(id: string, set: Partial<Pick<Row, 'state' | 'progress' | 'step' | 'error' | 'result'>>): void {
    this.db
      .update(operations)
      .set({ ...set, updatedAt: Date.now() })
      .where(eq(operations.id, id))
      .run();
    this.publish(this.getRow(id));
  }

  private getRow(id: string): Row {
    const row = this.db.select().from(operations).where(eq(operations.id, id)).get();
    if (!row) throw notFound(`operation ${id}`, { id });
    return row;
  }

  private publish(row: Row): void {
    const op = this.toOperation(row);
    this.bus.publish('operation', { id: op.id, kind: op.kind, target: op.target, state: op.state, progress: op.progress, step: op.step, error: op.error, ...(op.transfer ? { transfer: op.transfer } : {}) });
  }

  private toOperation(row: Row): Operation {
    return {
      id: row.id,
      kind: row.kind,
      target: row.target,
      state: row.state,
      progress: row.progress,
      step: row.step,
      error: row.error ? (JSON.parse(row.error) as Operation['error']) : null,
      inputs: JSON.parse(row.inputs) as Record<string, unknown>,
      result: row.result ? JSON.parse(row.result) : null,
      ...(this.transfers.has(row.id) ? { transfer: this.transfers.get(row.id)! } : {}),
      createdAt: row.createdAt,
      updatedAt: row.updatedAt,
    };
  }
}

/** How often a download's bytes are published at most (progress bars need no more). */
const TRANSFER_PUBLISH_MS = 250;

export function isFinished(state: OperationState): boolean {
  return state === 'succeeded' || state === 'failed';
}
