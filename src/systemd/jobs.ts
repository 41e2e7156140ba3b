/**
 * Unit jobs and unit files: StartUnit/StopUnit/RestartUnit with their job waiters, ResetFailedUnit,
 * writing and removing unit files, and Manager.Reload batched across writers.
 *
 * A job waiter is registered synchronously when the call's reply is dispatched, before any later
 * message (such as its JobRemoved) is handled.
 */
import { join } from 'node:path';
import { SmError } from '../errors.js';
import { writeFileAtomic, removeFileDurable } from '../fs/atomic.js';
import type { SystemdLink } from './connection.js';
import { unavailable } from './dbus.js';
import { checkUnitName } from './props.js';
import type { JobOutcome, JobResult } from './types.js';
import type { UnitCache } from './units.js';

interface JobWaiter {
  unit: string;
  resolve: (r: { result: JobResult }) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export interface UnitJobsOptions {
  link: Pick<SystemdLink, 'managerCall'>;
  units: UnitCache;
  unitDir: string;
  prefix: string;
  reloadTimeoutMs: number;
  jobTimeoutMs: number;
  reloadBatchMs: number;
}

export class UnitJobs {
  private readonly jobs = new Map<string, JobWaiter>();
  private pendingReload: { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } | null = null;
  /** A unit file changed since the last successful Reload. */
  reloadOwed = false;

  constructor(private readonly opts: UnitJobsOptions) {}

  // ---------------------------------------------------------------- unit files

  private checkOwnName(name: string): void {
    if (!name.startsWith(this.opts.prefix) || !/^[A-Za-z0-9:_.@-]+\.service$/.test(name) || name.length > 250) {
      throw new SmError('INTERNAL', `not an smd unit name: ${JSON.stringify(name)}`, { unit: name });
    }
  }

  async writeUnit(name: string, text: string, opts: { reload?: boolean } = {}): Promise<void> {
    this.checkOwnName(name);
    await writeFileAtomic(join(this.opts.unitDir, name), text);
    this.reloadOwed = true;
    if (opts.reload !== false) await this.reload();
  }

  async removeUnit(name: string, opts: { reload?: boolean } = {}): Promise<boolean> {
    this.checkOwnName(name);
    const existed = await removeFileDurable(join(this.opts.unitDir, name));
    this.opts.units.forget(name);
    if (existed) this.reloadOwed = true;
    if (opts.reload !== false && existed) await this.reload();
    return existed;
  }

  /** Manager.Reload, shared by every caller that asks within the batch window. */
  reload(): Promise<void> {
    if (this.pendingReload) return this.pendingReload.promise;
    let resolve!: () => void;
    let reject!: (e: Error) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const batch = { promise, resolve, reject };
    this.pendingReload = batch;
    setTimeout(() => {
      if (this.pendingReload === batch) this.pendingReload = null;
      else return; // closed meanwhile
      this.reloadOwed = false;
      this.opts.link.managerCall('Reload', undefined, [], { timeoutMs: this.opts.reloadTimeoutMs }).then(
        () => batch.resolve(),
        (err: Error) => {
          this.reloadOwed = true;
          batch.reject(err);
        },
      );
    }, this.opts.reloadBatchMs);
    return promise;
  }

  // ---------------------------------------------------------------- jobs

  async resetFailedUnit(name: string): Promise<void> {
    checkUnitName(name);
    await this.opts.link.managerCall('ResetFailedUnit', 's', [name], { unit: name });
    this.opts.units.resetFailed(name);
  }

  async runJob(method: 'StartUnit' | 'StopUnit' | 'RestartUnit', name: string): Promise<JobOutcome> {
    checkUnitName(name);
    const { units } = this.opts;
    let jobDone!: Promise<{ result: JobResult }>;
    let jobPath = '';
    // onReply runs synchronously while the reply is dispatched: no later JobRemoved can slip by.
    await this.opts.link.managerCall(method, 'ss', [name, 'replace'], {
      unit: name,
      onReply: (body) => {
        jobPath = String(body[0]);
        jobDone = new Promise((resolve, reject) => {
          const timer = setTimeout(() => {
            if (this.jobs.delete(jobPath)) reject(unavailable(`systemd ${method} ${name}: job ${jobPath} not finished within ${this.opts.jobTimeoutMs} ms`, undefined, { unit: name }));
          }, this.opts.jobTimeoutMs);
          timer.unref();
          this.jobs.set(jobPath, { unit: name, resolve, reject, timer });
        });
      },
    });
    const { result } = await jobDone;
    let rec = units.get(name);
    if (result !== 'done' && result !== 'skipped' && units.isOwn(name) && (!rec || rec.result === null || rec.execMainStatus === null)) {
      // Signals normally arrived before JobRemoved; read the rest if they did not.
      await units.refreshServiceProps(name).catch((err: unknown) => units.propsUnread(name, err));
      rec = units.get(name);
    }
    const outcome: JobOutcome = {
      unit: name,
      job: jobPath,
      jobResult: result,
      activeState: rec?.activeState ?? 'unknown',
      subState: rec?.subState ?? 'unknown',
      result: rec?.result ?? null,
      execMainStatus: rec?.execMainStatus ?? null,
    };
    if (result === 'done' || result === 'skipped') return outcome;
    const why = outcome.result && outcome.result !== 'success' ? ` (${outcome.result}${outcome.execMainStatus !== null ? `, status ${outcome.execMainStatus}` : ''})` : '';
    throw new SmError('SYSTEMD', `${method} ${name}: job ${result}${why}`, { ...outcome });
  }

  /** JobRemoved: settle the waiter of that job; a job of ours that did not succeed is a unit change. */
  onJobRemoved(path: string, unit: string, result: JobResult): void {
    const w = this.jobs.get(path);
    if (w) {
      this.jobs.delete(path);
      clearTimeout(w.timer);
      w.resolve({ result });
    }
    const { units } = this.opts;
    if (units.isOwn(unit) && result !== 'done') units.emitChange(units.record(unit), 'job', { path, result });
  }

  /** Every waiting job fails with `err` (connection or manager lost, adapter closed). */
  failAll(err: Error): void {
    for (const [path, w] of this.jobs) {
      clearTimeout(w.timer);
      w.reject(err);
      this.jobs.delete(path);
    }
  }

  /** The adapter closes: waiting jobs and a pending reload fail. */
  close(err: Error): void {
    this.failAll(err);
    if (this.pendingReload) {
      const p = this.pendingReload;
      this.pendingReload = null;
      p.reject(err);
    }
  }
}
