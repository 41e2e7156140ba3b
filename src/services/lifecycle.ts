import { SmError, toSmError } from '../errors.js';
import type { UnitState } from '../systemd/types.js';
import { ignoreUnknownUnit, isUnknownUnit, withService, type ServiceContext } from './context.js';
import type { ServiceFiles } from './files.js';
import { toService } from './repository.js';
import { STATE, STATUS, type Row, type Service } from './types.js';

/** systemd's view → state (0 stopped, 1 running, 2 failed) and status (0 ok, 1 error). */
export function mapUnitState(s: Pick<UnitState, 'activeState' | 'subState'>): { state: number; status: number } {
  if (s.activeState === 'failed' || s.subState === 'auto-restart') return { state: STATE.failed, status: STATUS.error };
  if (s.activeState === 'active' || s.activeState === 'reloading' || s.activeState === 'activating') return { state: STATE.running, status: STATUS.ok };
  return { state: STATE.stopped, status: STATUS.ok };
}

/**
 * Start, stop, settle, and the database's mirror of systemd's state: `state`/`status` follow
 * the unit's signals, and a job's own outcome never overwrites a newer signal.
 */
export class Lifecycle {
  private readonly offUnit: () => void;

  constructor(
    private readonly ctx: ServiceContext,
    private readonly files: ServiceFiles,
  ) {
    const onUnit = (change: { unit: string; state: UnitState }) => this.onUnitChange(change.state);
    ctx.systemd.on('unit', onUnit);
    this.offUnit = () => ctx.systemd.off('unit', onUnit);
  }

  close(): void {
    this.offUnit();
  }

  /** A service runs when the operator wants it and the given users use it. */
  shouldRun(row: Row, attached: Set<string>): boolean {
    return row.desired === 'running' && attached.has(row.id);
  }

  start(id: string): Promise<Service> {
    return withService(this.ctx, id, async (users) => {
      const row = this.ctx.repo.get(id);
      this.ctx.repo.setDesired(id, 'running');
      await this.files.prepare(row, users);
      await this.startUnit(row, users);
      return this.view(id);
    });
  }

  stop(id: string): Promise<Service> {
    return withService(this.ctx, id, async (users) => {
      const row = this.ctx.repo.get(id);
      this.ctx.repo.setDesired(id, 'stopped');
      await this.stopUnit(row);
      await this.files.releaseMounts(row, users);
      return this.view(id);
    });
  }

  restart(id: string): Promise<Service> {
    return withService(this.ctx, id, async (users) => {
      const row = this.ctx.repo.get(id);
      this.ctx.repo.setDesired(id, 'running');
      await this.stopUnit(row).catch(ignoreUnknownUnit(this.ctx, 'stop before restart', { id }));
      await this.startUnit(row, users);
      return this.view(id);
    });
  }

  /** Mounts the root and starts the unit; resolves when systemd's job is done. */
  async startUnit(row: Row, users: string): Promise<void> {
    await this.files.mountRoot(row, users);
    await this.ctx.systemd.resetFailedUnit(row.unit!).catch(ignoreUnknownUnit(this.ctx, 'reset-failed before start', { id: row.id }));
    try {
      await this.ctx.systemd.startUnit(row.unit!);
    } catch (err) {
      this.markState(row.id, STATE.failed, STATUS.error);
      throw startError(row, err);
    }
    this.ctx.repo.setStartedAt(row.id);
    // The job is done, but a signal handled meanwhile may already say the unit failed: that
    // newer state stays (fault 1 of issue 13).
    const now = this.ctx.systemd.knownUnit(row.unit!);
    if (now && mapUnitState(now).state === STATE.failed) this.markState(row.id, STATE.failed, STATUS.error, now);
    else this.markState(row.id, STATE.running, STATUS.ok);
  }

  /** Starts and requires the unit to stay active for `settleMs` (a crash loop is a failed start). */
  async startAndSettle(row: Row, users: string): Promise<void> {
    await this.startUnit(row, users);
    const settleMs = this.ctx.config.services.settleMs;
    if (settleMs === 0) return;
    const { systemd } = this.ctx;
    const before = await systemd.getUnit(row.unit!);
    // Leave early when the unit leaves `active` during the settle time (keeping how it ended,
    // which a restart would overwrite); else check at its end.
    let left: UnitState | null = null;
    await new Promise<void>((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        systemd.off('unit', onUnit);
        resolve();
      };
      const onUnit = (c: { unit: string; state: UnitState }) => {
        if (c.unit === row.unit && c.state.activeState !== 'active' && c.state.activeState !== 'reloading') {
          left = c.state;
          finish();
        }
      };
      const timer = setTimeout(finish, settleMs);
      systemd.on('unit', onUnit);
    });
    const after = await systemd.getUnit(row.unit!);
    if (left !== null || after.activeState !== 'active' || (after.restarts ?? 0) !== (before.restarts ?? 0)) {
      const first = (left as UnitState | null) ?? after;
      const { activeState, subState } = first;
      // The Unit and Service property signals arrive separately: take how it ended from
      // whichever view already has it.
      const result = first.result && first.result !== 'success' ? first.result : after.result;
      const execMainStatus = first.execMainStatus || after.execMainStatus;
      const { restarts } = after;
      const why = [`${activeState}/${subState}`, result && result !== 'success' && `result ${result}`, execMainStatus !== null && `exit status ${execMainStatus}`, restarts && `${restarts} restarts`].filter(Boolean).join(', ');
      throw new SmError('SYSTEMD', `${row.unit} did not stay active: ${why}`, { unit: row.unit, activeState, subState, result, execMainStatus, restarts });
    }
  }

  /** Stops the unit; a unit systemd does not know is stopped. */
  async stopUnit(row: Row): Promise<void> {
    try {
      await this.ctx.systemd.stopUnit(row.unit!);
    } catch (err) {
      if (!isUnknownUnit(err)) throw err;
    }
    this.markState(row.id, STATE.stopped, STATUS.ok);
  }

  /** Writes state/status when they change, and publishes the change. */
  markState(id: string, state: number, status: number, unit?: UnitState): void {
    if (!this.ctx.repo.markState(id, state, status)) return;
    this.ctx.bus.publish('service', {
      id,
      state,
      status,
      ...(unit ? { activeState: unit.activeState, subState: unit.subState, ...(unit.result && unit.result !== 'success' ? { reason: unit.result } : {}) } : {}),
    });
  }

  view(id: string): Service {
    return { ...toService(this.ctx.repo.get(id)), address: this.ctx.networking?.address(id) ?? null };
  }

  private onUnitChange(s: UnitState): void {
    const m = /^smd-(.+)\.service$/.exec(s.unit);
    if (!m) return;
    const { state, status } = mapUnitState(s);
    this.markState(m[1]!, state, status, s);
  }
}

function startError(row: Row, err: unknown): SmError {
  const e = toSmError(err, 'SYSTEMD');
  if (e.code === 'UNAVAILABLE') return e;
  const d = (e.details ?? {}) as { result?: string; execMainStatus?: number; jobResult?: string };
  const why = [d.jobResult && `job ${d.jobResult}`, d.result && `result ${d.result}`, d.execMainStatus !== undefined && d.execMainStatus !== null && `exit status ${d.execMainStatus}`].filter(Boolean).join(', ');
  return new SmError('SYSTEMD', `${row.unit} failed to start${why ? `: ${why}` : `: ${e.message}`}`, { unit: row.unit, ...d });
}
