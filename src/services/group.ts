import { SmError, toSmError } from '../errors.js';
import type { ImageInfo } from '../images/index.js';
import type { OperationHandle } from '../operations/operations.js';
import { withService, withServiceOnly, type ServiceContext } from './context.js';
import type { Installer } from './install.js';
import type { Removal } from './removal.js';
import type { Settings } from './settings.js';
import type { Row } from './types.js';

/** One service of a group: its id and version come from the caller, not from annotations. */
export interface GroupItem {
  id: string;
  version: number;
  image: ImageInfo;
  /** The trusted key whose signature was verified (ImageSources.resolve), or null. */
  signedBy: string | null;
  settings?: Settings | undefined;
}

/** What a group records in its operation's inputs (`inputs.group`) so that a restart can finish or undo it. */
export interface GroupRecord {
  /** Ids in the order they were changed. */
  order: string[];
  changes: Record<string, { version: number; mode?: 'fresh' | 'update'; previous?: Row }>;
  /** Set once every change held: from then on a restart finishes the group instead of undoing it. */
  committed?: boolean;
  /** The services to remove after the commit. */
  removals?: string[];
}

/**
 * Installs and updates that hold or are undone together (the desired state's apply, SPEC 12).
 * Each change is health-gated as services.install; an update's previous version survives
 * until `commit`, so `rollback` can put every changed service back as it was.
 */
export class ChangeGroup {
  private readonly rec: GroupRecord = { order: [], changes: {} };
  /** Ids whose change held (the failing one undid itself). */
  private readonly held: string[] = [];

  constructor(
    private readonly ctx: ServiceContext,
    private readonly installer: Installer,
    private readonly removal: Removal,
    private readonly op: OperationHandle,
    /** When the group's operation was created: a fresh install's row is its own if not older. */
    private readonly since: number,
  ) {}

  /**
   * Installs or updates one service. The progress of the change is mapped into `range` of the
   * operation's; its steps are named `<id>-<step>` (e.g. `web-start`). Throws what the
   * installer threw, after that service alone was put back.
   */
  async change(item: GroupItem, range: [number, number]): Promise<'installed' | 'updated'> {
    this.rec.order.push(item.id);
    this.rec.changes[item.id] = { version: item.version };
    this.save();
    const handle = this.handleFor(item.id, range);
    const { mode } = await withService(this.ctx, item.id, (users) => this.installer.change(handle, item, users));
    this.held.push(item.id);
    return mode === 'fresh' ? 'installed' : 'updated';
  }

  /**
   * Puts back every service whose change held, newest first: updated ones to their previous
   * version and running state, fresh installs removed. Returns the ids put back and those that
   * could not be (with why).
   */
  async rollback(): Promise<{ rolledBack: string[]; failed: { id: string; error: string }[] }> {
    const out = { rolledBack: [] as string[], failed: [] as { id: string; error: string }[] };
    for (const id of [...this.held].reverse()) {
      try {
        await undoChange(this.ctx, this.installer, this.removal, id, this.rec.changes[id]!, this.since);
        out.rolledBack.push(id);
      } catch (err) {
        const e = toSmError(err);
        this.ctx.logger.error('could not put a service back after a failed group', { id, err: e });
        out.failed.push({ id, error: e.message });
      }
    }
    await this.ctx.layers.prune().catch((err: unknown) => this.ctx.logger.error('prune after a rolled back group failed', { err }));
    return out;
  }

  /** Every change held: records it (a restart now finishes the group) and finishes the updates. */
  async commit(removals: string[]): Promise<void> {
    this.rec.committed = true;
    this.rec.removals = removals;
    this.save();
    await finishChanges(this.installer, this.rec);
  }

  /** Removes one service after the commit (its unit, files, storage; layers at `prune`). */
  remove(id: string): Promise<void> {
    return withServiceOnly(this.ctx, id, () => this.removal.purge(id));
  }

  private save(): void {
    this.op.record({ group: this.rec });
  }

  /** The operation as one change sees it: prefixed steps, a progress range, records under its id. */
  private handleFor(id: string, [from, to]: [number, number]): OperationHandle {
    return {
      id: this.op.id,
      step: (name, message) => this.op.step(`${id}-${name}`, message),
      progress: (percent, transfer) => this.op.progress(from + (Math.max(0, Math.min(100, percent)) / 100) * (to - from), transfer),
      record: (extra) => {
        const { mode, previous } = extra as { mode?: 'fresh' | 'update' | 'attach'; previous?: Row };
        const change = this.rec.changes[id]!;
        if (mode === 'fresh' || mode === 'update') change.mode = mode;
        if (previous) change.previous = previous;
        this.save();
      },
      setTarget: () => {},
    };
  }
}

/** Undoes one change of a group: an update back to its previous row, a fresh install removed. */
async function undoChange(ctx: ServiceContext, installer: Installer, removal: Removal, id: string, change: GroupRecord['changes'][string], since: number): Promise<boolean> {
  if (change.mode === 'update' && change.previous) {
    const previous = change.previous;
    await withService(ctx, id, (users) => installer.rollback(previous, change.version, users));
    return true;
  }
  if (change.mode === 'fresh') {
    const row = ctx.repo.find(id);
    if (row && row.createdAt < since) return false; // not this group's row
    await withServiceOnly(ctx, id, () => removal.purge(id));
    return true;
  }
  return false; // it had not begun changing anything
}

async function finishChanges(installer: Installer, rec: GroupRecord): Promise<void> {
  for (const id of rec.order) {
    const change = rec.changes[id]!;
    if (change.mode === 'update' && change.previous) await installer.finishUpdate(change.previous, { prune: false });
  }
}

/**
 * Start-up recovery of a group its operation did not finish: a committed one is finished
 * (updates cleaned up, removals done), any other undone in full, newest change first, including
 * the one that was in flight. Layers are pruned after either.
 */
export async function recoverGroup(ctx: ServiceContext, installer: Installer, removal: Removal, rec: GroupRecord, since: number): Promise<{ outcome: 'finished' | 'rolledBack'; ids: string[] }> {
  const ids: string[] = [];
  if (rec.committed) {
    await finishChanges(installer, rec);
    for (const id of rec.removals ?? []) {
      if (!removal.anyTrace(id)) continue;
      await removal.purge(id);
      ids.push(id);
    }
    await ctx.layers.prune();
    return { outcome: 'finished', ids };
  }
  const failures: string[] = [];
  for (const id of [...rec.order].reverse()) {
    try {
      if (await undoChange(ctx, installer, removal, id, rec.changes[id]!, since)) ids.push(id);
    } catch (err) {
      ctx.logger.error('could not undo a change of an interrupted group', { id, err });
      failures.push(id);
    }
  }
  await ctx.layers.prune();
  if (failures.length > 0) throw new SmError('INTERNAL', `could not undo ${failures.join(', ')}`, { failures });
  return { outcome: 'rolledBack', ids };
}
