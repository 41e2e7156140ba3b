import { run } from '../exec/run.js';
import { entryBelongsToUnit, unitMatchArgs, type JournalFields } from './match.js';

export interface LogEntry {
  /** ms since the epoch */
  time: number;
  priority: number;
  message: string;
  cursor: string;
}

export interface LogQuery {
  unit: string;
  /** The service's uid: when given, stream entries must also carry `_UID=<uid>` (see match.ts). */
  uid?: number;
  lines?: number;
  /** ms since the epoch */
  since?: number;
  /** Continue after this cursor (from a previous answer). */
  cursor?: string;
}

/**
 * Reads a unit's journal entries with journalctl, oldest first: those journald filed under
 * `_SYSTEMD_UNIT=<unit>`, and those of the unit's stdout stream (`SYSLOG_IDENTIFIER=smd-<id>`,
 * `_TRANSPORT=stdout`) that journald attributed to the manager's cgroup instead (see match.ts).
 */
export async function readUnitLog(q: LogQuery): Promise<{ entries: LogEntry[]; cursor: string | null }> {
  const lines = q.lines ?? 100;
  const args = ['-o', 'json', '--no-pager', '-q', ...unitMatchArgs(q.unit, q.uid)];
  if (q.cursor) args.push(`--after-cursor=${q.cursor}`);
  else args.push('-n', String(lines));
  if (q.since !== undefined) args.push(`--since=@${Math.floor(q.since / 1000)}`);
  const { stdout } = await run('journalctl', args, { timeoutMs: 20_000, errorCode: 'UNAVAILABLE' });
  return selectUnitEntries(stdout, { unit: q.unit, uid: q.uid, lines, cursor: q.cursor });
}

/**
 * From `journalctl -o json` output, the first `lines` entries that belong to the unit. The cursor
 * is that of the last entry looked at (also one that was not the unit's), so continuing from it
 * neither repeats nor re-examines anything.
 */
export function selectUnitEntries(text: string, q: { unit: string; uid?: number; lines: number; cursor?: string }): { entries: LogEntry[]; cursor: string | null } {
  const entries: LogEntry[] = [];
  let cursor = q.cursor ?? null;
  for (const e of parseJournalFields(text)) {
    if (entries.length >= q.lines) break;
    if (typeof e.__CURSOR === 'string' && e.__CURSOR) cursor = e.__CURSOR;
    if (entryBelongsToUnit(e, q.unit, q.uid)) entries.push(toLogEntry(e));
  }
  return { entries, cursor };
}

function parseJournalFields(text: string): JournalFields[] {
  const out: JournalFields[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as JournalFields);
    } catch {
      continue;
    }
  }
  return out;
}

function toLogEntry(e: JournalFields): LogEntry {
  const raw = e.MESSAGE;
  const message = Array.isArray(raw) ? Buffer.from(raw as number[]).toString('utf8') : typeof raw === 'string' ? raw : '';
  return {
    time: Math.floor(Number(e.__REALTIME_TIMESTAMP ?? 0) / 1000),
    priority: Number(e.PRIORITY ?? 6),
    message,
    cursor: String(e.__CURSOR ?? ''),
  };
}

/** Parses `journalctl -o json` output (one object per line); MESSAGE may be a byte array. */
export function parseJournalJson(text: string): LogEntry[] {
  return parseJournalFields(text).map(toLogEntry);
}
