/**
 * Journal alerts: entries of smd's service units at or above `journal.alertPriority` (numeric
 * PRIORITY <= alertPriority; 3 = err) become alerts with source 'journal'. A line a service
 * prints as `<3>text` on stdout/stderr is such an entry (systemd's SyslogLevelPrefix=yes is the
 * default). An entry is a service's when journald filed it under `_SYSTEMD_UNIT=smd-<id>.service`,
 * or when it came over that service's stdout stream (`SYSLOG_IDENTIFIER=smd-<id>`,
 * `_TRANSPORT=stdout`, and `_UID=` the service's uid from the services table; for an id without
 * a row, attributed to no unit or to the manager's `init.scope`), which journald sometimes files
 * under `init.scope`: see match.ts for why, and why another service cannot forge it.
 *
 * How: one long-running `journalctl -f -o json -p 0..<alertPriority> --after-cursor=<cursor>`
 * child, filtered here by unit name or stream identifier. Chosen over periodic polling because
 *  - latency is that of journald itself, and an idle device costs nothing (no process spawned
 *    every few seconds, no re-seek of the journal files);
 *  - the priority filter runs inside journalctl, so only error entries cross the pipe;
 *  - the unit filter is applied here rather than with `-u 'smd-*'`, because journalctl expands a
 *    unit glob once at start and would miss services installed later (and `-u` would miss the
 *    entries journald attributed to init.scope).
 * The child is restarted with backoff (100 ms doubling to 30 s) if it dies, from the last
 * committed cursor.
 *
 * Exactly once across restarts: the cursor of the last entry handled is written to
 * `config.cursor` in the same transaction as the alerts of the entries up to it; a restart
 * continues with `--after-cursor`, so nothing is reported twice or missed. On the very first start
 * (no cursor) the journal's current tail is taken as the cursor, so that history is not replayed
 * but everything from then on is seen even across a restart.
 *
 * A storm (a service logging errors in a loop) is bounded: at most `maxPerServicePerMinute`
 * alerts per service per minute; the rest are counted, and the next alert carries the count in
 * `payload.suppressed`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { eq, sql } from 'drizzle-orm';
import type { AlertStore, NewAlert } from '../alerts/store.js';
import type { Db } from '../db/database.js';
import { config as configTable, services as servicesTable } from '../db/schema.js';
import { run } from '../exec/run.js';
import type { Logger } from '../log.js';
import { serviceOfEntry } from './match.js';

export interface JournalAlertEntry {
  unit: string;
  serviceId: string;
  priority: number;
  message: string;
  cursor: string;
  /** ms since the epoch */
  time: number;
  pid: number | null;
}

/**
 * Parses one `journalctl -o json` line. Returns `{cursor}` alone for an entry that is not an
 * alert (another unit, or a lower priority) so that the cursor can still move past it. `uidOf`
 * gives an installed service's uid (its stream entries must carry it; see match.ts).
 */
export function parseJournalLine(
  line: string,
  alertPriority: number,
  unitPrefix = 'smd-',
  uidOf?: (serviceId: string) => number | null | undefined,
): { cursor: string; entry: JournalAlertEntry | null } | null {
  if (!line.startsWith('{')) return null;
  let e: Record<string, unknown>;
  try {
    e = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return null;
  }
  const cursor = typeof e.__CURSOR === 'string' ? e.__CURSOR : null;
  if (!cursor) return null;
  const priority = Number(e.PRIORITY ?? 6);
  if (!Number.isFinite(priority) || priority > alertPriority) return { cursor, entry: null };
  const service = serviceOfEntry(e, unitPrefix, uidOf);
  if (!service) return { cursor, entry: null };
  const { unit, serviceId } = service;
  const raw = e.MESSAGE;
  const message = Array.isArray(raw) ? Buffer.from(raw as number[]).toString('utf8') : typeof raw === 'string' ? raw : '';
  const pid = Number(e._PID);
  return {
    cursor,
    entry: { unit, serviceId, priority, message, cursor, time: Math.floor(Number(e.__REALTIME_TIMESTAMP ?? 0) / 1000), pid: Number.isFinite(pid) && pid > 0 ? pid : null },
  };
}

const PRIORITY_NAMES = ['emerg', 'alert', 'crit', 'err', 'warning', 'notice', 'info', 'debug'];

export interface JournalAlertsOptions {
  db: Db;
  alerts: AlertStore;
  logger: Logger;
  /** Entries with PRIORITY <= this become alerts (default 3 = err). */
  alertPriority?: number;
  /** argv that runs journalctl (default ['journalctl']); tests prefix nsenter to reach a sandbox's journal. */
  journalctl?: readonly string[];
  unitPrefix?: string;
  maxPerServicePerMinute?: number;
  backoffMs?: { initial: number; max: number };
  now?: () => number;
}

export interface JournalAlertsHealth {
  ok: boolean;
  detail: string;
}

export class JournalAlerts {
  private readonly alertPriority: number;
  private readonly argv: readonly string[];
  private readonly log: Logger;
  private readonly now: () => number;
  private child: ChildProcess | null = null;
  private running = false;
  private restartTimer: NodeJS.Timeout | null = null;
  private attempt = 0;
  private lastError: string | null = null;
  private lastStderr = '';
  private readonly windows = new Map<string, { start: number; count: number; suppressed: number }>();
  private pending: string[] = [];
  private flushScheduled = false;
  private exited: Promise<void> | null = null;

  constructor(private readonly opts: JournalAlertsOptions) {
    this.alertPriority = opts.alertPriority ?? 3;
    this.argv = opts.journalctl ?? ['journalctl'];
    this.log = opts.logger.child({ component: 'journal-alerts' });
    this.now = opts.now ?? Date.now;
  }

  /** The cursor alerts were taken up to (config.cursor). */
  cursor(): string | null {
    return this.opts.db.select({ c: configTable.cursor }).from(configTable).get()?.c ?? null;
  }

  health(): JournalAlertsHealth {
    if (!this.running) return { ok: false, detail: 'not started' };
    if (this.child && this.lastError === null) return { ok: true, detail: `following the journal (priority <= ${this.alertPriority})` };
    if (!this.child && this.lastError === null) return { ok: false, detail: 'starting (smd starts the follower right after READY=1)' };
    return { ok: false, detail: this.lastError ?? 'journalctl not running' };
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    if (this.cursor() === null) {
      // First start ever: begin at the journal's tail, and remember it at once.
      try {
        const tail = await this.tailCursor();
        if (tail) this.saveCursor(tail);
      } catch (err) {
        this.lastError = `cannot read the journal: ${(err as Error).message}`;
        this.log.warn('journal alerts: cannot read the journal tail', { error: this.lastError });
      }
    }
    this.spawnChild();
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const hard = setTimeout(() => child.kill('SIGKILL'), 3000);
      await this.exited;
      clearTimeout(hard);
    }
    this.flush();
  }

  private async tailCursor(): Promise<string | null> {
    const [file, ...pre] = this.argv;
    const { stdout } = await run(file!, [...pre, '-n', '1', '-o', 'json', '--no-pager', '-q'], { timeoutMs: 20_000, errorCode: 'UNAVAILABLE' });
    const line = stdout.split('\n').find((l) => l.startsWith('{'));
    return line ? ((JSON.parse(line) as { __CURSOR?: string }).__CURSOR ?? null) : null;
  }

  private spawnChild(): void {
    if (!this.running) return;
    const cursor = this.cursor();
    const [file, ...pre] = this.argv;
    const args = [...pre, '-f', '-o', 'json', '--no-pager', '-q', `--priority=0..${this.alertPriority}`, ...(cursor ? [`--after-cursor=${cursor}`] : ['-n', '0'])];
    const child = spawn(file!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.lastStderr = '';
    const startedAt = this.now();
    this.exited = new Promise((resolve) => child.once('close', () => resolve()));
    child.once('spawn', () => {
      this.lastError = null;
    });
    child.on('error', (err) => {
      this.lastError = `journalctl: ${err.message}`;
    });
    child.stderr!.on('data', (d: Buffer) => (this.lastStderr = (this.lastStderr + d.toString()).slice(-2000)));
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      this.pending.push(line);
      if (!this.flushScheduled) {
        // Lines that arrive together are committed together (one transaction per burst).
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
    child.once('close', (code, signal) => {
      this.flush();
      if (this.child === child) this.child = null;
      if (!this.running) return;
      this.lastError = `journalctl exited (${code ?? signal})${this.lastStderr ? `: ${this.lastStderr.trim().split('\n').at(-1)}` : ''}`;
      // A child that ran for a while resets the backoff.
      if (this.now() - startedAt > 60_000) this.attempt = 0;
      const backoff = this.opts.backoffMs ?? { initial: 100, max: 30_000 };
      const delay = Math.min(backoff.max, backoff.initial * 2 ** this.attempt++);
      this.log.warn('journal alerts: journalctl ended, restarting', { error: this.lastError, delayMs: delay });
      this.restartTimer = setTimeout(() => {
        this.restartTimer = null;
        this.spawnChild();
      }, delay);
      this.restartTimer.unref();
    });
  }

  /** Turns the pending lines into alerts and moves the cursor, in one transaction. */
  private flush(): void {
    this.flushScheduled = false;
    if (this.pending.length === 0) return;
    const lines = this.pending;
    this.pending = [];
    let cursor: string | null = null;
    const items: NewAlert[] = [];
    const uids = new Map<string, number | null>();
    const uidOf = (id: string): number | null => {
      if (!uids.has(id)) uids.set(id, this.opts.db.select({ uid: servicesTable.uid }).from(servicesTable).where(eq(servicesTable.id, id)).get()?.uid ?? null);
      return uids.get(id)!;
    };
    for (const line of lines) {
      const parsed = parseJournalLine(line, this.alertPriority, this.opts.unitPrefix, uidOf);
      if (!parsed) continue;
      cursor = parsed.cursor;
      const e = parsed.entry;
      if (!e) continue;
      const suppressed = this.admit(e.serviceId, e.time || this.now());
      if (suppressed === null) continue;
      items.push({
        time: e.time || this.now(),
        source: 'journal',
        serviceId: e.serviceId,
        kind: `journal.${PRIORITY_NAMES[e.priority] ?? e.priority}`,
        message: e.message,
        payload: { unit: e.unit, priority: e.priority, cursor: e.cursor, pid: e.pid, ...(suppressed > 0 ? { suppressed } : {}) },
      });
    }
    if (cursor === null) return;
    const c = cursor;
    const stored = this.opts.db.transaction((tx) => {
      const out = this.opts.alerts.insertIn(tx, items);
      tx.update(configTable)
        .set({ cursor: c, updatedAt: this.now(), rowVersion: sql`${configTable.rowVersion} + 1` })
        .run();
      return out;
    });
    this.opts.alerts.publish(stored);
  }

  /** Rate limit per service: null to drop, else how many were dropped before this one. */
  private admit(serviceId: string, time: number): number | null {
    const max = this.opts.maxPerServicePerMinute ?? 60;
    let w = this.windows.get(serviceId);
    if (!w || time - w.start >= 60_000) {
      const suppressed = w?.suppressed ?? 0;
      this.windows.set(serviceId, (w = { start: time, count: 0, suppressed }));
    }
    if (w.count >= max) {
      w.suppressed++;
      return null;
    }
    w.count++;
    const s = w.suppressed;
    w.suppressed = 0;
    return s;
  }

  private saveCursor(cursor: string): void {
    this.opts.db
      .update(configTable)
      .set({ cursor, updatedAt: this.now(), rowVersion: sql`${configTable.rowVersion} + 1` })
      .run();
  }
}
