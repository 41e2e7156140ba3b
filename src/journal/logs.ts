import { run } from '../exec/run.js';

export interface LogEntry {
  /** ms since the epoch */
  time: number;
  priority: number;
  message: string;
  cursor: string;
}

export interface LogQuery {
  unit: string;
  lines?: number;
  /** ms since the epoch */
  since?: number;
  /** Continue after this cursor (from a previous answer). */
  cursor?: string;
}

/** Reads a unit's journal entries with journalctl (`_SYSTEMD_UNIT`), oldest first. */
export async function readUnitLog(q: LogQuery): Promise<{ entries: LogEntry[]; cursor: string | null }> {
  const lines = q.lines ?? 100;
  const args = ['-o', 'json', '--no-pager', '-q', `_SYSTEMD_UNIT=${q.unit}`];
  if (q.cursor) args.push(`--after-cursor=${q.cursor}`);
  else args.push('-n', String(lines));
  if (q.since !== undefined) args.push(`--since=@${Math.floor(q.since / 1000)}`);
  const { stdout } = await run('journalctl', args, { timeoutMs: 20_000, errorCode: 'UNAVAILABLE' });
  const entries = parseJournalJson(stdout).slice(0, lines);
  return { entries, cursor: entries.at(-1)?.cursor ?? q.cursor ?? null };
}

/** Parses `journalctl -o json` output (one object per line); MESSAGE may be a byte array. */
export function parseJournalJson(text: string): LogEntry[] {
  const out: LogEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    let e: Record<string, unknown>;
    try {
      e = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue;
    }
    const raw = e.MESSAGE;
    const message = Array.isArray(raw) ? Buffer.from(raw as number[]).toString('utf8') : typeof raw === 'string' ? raw : '';
    out.push({
      time: Math.floor(Number(e.__REALTIME_TIMESTAMP ?? 0) / 1000),
      priority: Number(e.PRIORITY ?? 6),
      message,
      cursor: String(e.__CURSOR ?? ''),
    });
  }
  return out;
}
