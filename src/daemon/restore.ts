/**
 * Start-up reconciliation of the services and the daemon's housekeeping: reconcile once systemd
 * answers (now, or at its first resync), resume what should run after later resyncs, sweep TTLs
 * and prune old operations on a timer. The daemon builds it; everything comes in the constructor.
 */
import type { Logger } from '../log.js';
import type { Operation } from '../operations/operations.js';
import type { SystemdAdapter } from '../systemd/types.js';

export interface RestoreServices {
  reconcile(interrupted: Operation[]): Promise<unknown>;
  resume(): Promise<void>;
  sweepTtl(): unknown;
}

export interface RestoreDeps {
  services: RestoreServices;
  systemd: Pick<SystemdAdapter, 'health' | 'on'>;
  operations: { prune(opts: { keep: number; maxAgeMs: number }): unknown };
  logger: Logger;
  /** Interval of the TTL sweep and operations prune (default one hour). */
  sweepIntervalMs?: number;
}

const TTL_SWEEP_MS = 3_600_000;
/** Finished operations are kept for 30 days, and the newest 1000 always. */
export const OPERATIONS_RETENTION = { keep: 1000, maxAgeMs: 30 * 86_400_000 };

/**
 * Reconciliation and resumes run one at a time, in order: a resync while the reconciliation (or a
 * resume) runs queues one resume after it (several such resyncs share it). Housekeeping on the
 * timer logs what throws; it never reaches the event loop as an uncaught exception.
 */
export class ServiceRestorer {
  private timer: NodeJS.Timeout | null = null;
  private queue: Promise<void> = Promise.resolve();
  private reconcileQueued = false;
  private resumeQueued = false;
  private interrupted: Operation[] = [];

  constructor(private readonly deps: RestoreDeps) {}

  /**
   * Start-up reconciliation when systemd answers now; otherwise at its first resync. Later
   * resyncs (after a bus or manager restart) only start what should run and does not. Rejects
   * when the start-up reconciliation itself fails.
   */
  async start(interrupted: Operation[]): Promise<void> {
    const { systemd, operations, logger } = this.deps;
    this.interrupted = interrupted;
    systemd.on('resynced', () => this.onResynced());
    if (systemd.health().ok) {
      await this.enqueueReconcile();
    } else {
      logger.warn('systemd is not reachable; services will be reconciled once it is', { detail: systemd.health().detail });
    }
    this.guarded('operations prune', () => operations.prune(OPERATIONS_RETENTION));
    this.timer = setInterval(() => this.housekeeping(), this.deps.sweepIntervalMs ?? TTL_SWEEP_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Resolves once everything queued so far has run (for tests and shutdown). */
  idle(): Promise<void> {
    return this.queue;
  }

  private onResynced(): void {
    const { logger } = this.deps;
    if (!this.reconcileQueued) {
      this.enqueueReconcile().catch((err: unknown) => logger.error('resync of services failed', { err }));
      return;
    }
    if (this.resumeQueued) return; // a resume is already waiting; it will see this resync's state
    this.resumeQueued = true;
    this.enqueue(async () => {
      this.resumeQueued = false;
      await this.deps.services.resume();
    }).catch((err: unknown) => logger.error('resync of services failed', { err }));
  }

  private enqueueReconcile(): Promise<void> {
    this.reconcileQueued = true;
    return this.enqueue(async () => {
      const report = await this.deps.services.reconcile(this.interrupted);
      this.deps.logger.info('services reconciled', report as Record<string, unknown>);
      this.guarded('TTL sweep', () => this.deps.services.sweepTtl());
    });
  }

  private enqueue(fn: () => Promise<void>): Promise<void> {
    const next = this.queue.then(fn);
    this.queue = next.catch(() => undefined); // the tail only orders the work; each caller gets its own error from `next`
    return next;
  }

  private housekeeping(): void {
    this.guarded('TTL sweep', () => this.deps.services.sweepTtl());
    this.guarded('operations prune', () => this.deps.operations.prune(OPERATIONS_RETENTION));
  }

  private guarded(what: string, fn: () => unknown): void {
    try {
      fn();
    } catch (err) {
      this.deps.logger.error('housekeeping failed', { step: what, err });
    }
  }
}
