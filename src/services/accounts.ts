import { readFile } from 'node:fs/promises';
import { SmError } from '../errors.js';
import { run, type RunResult } from '../exec/run.js';

/** How long a lock of the account files held by another process is waited for. */
export const ACCOUNT_LOCK_WAIT_MS = 10_000;

/** shadow's tools when another process holds /etc/passwd.lock, /etc/group.lock, ... or /etc/.pwd.lock. */
const LOCKED = /lock .* already used by PID|cannot lock|unable to lock|try again later/i;

/**
 * Runs useradd/groupadd/userdel/groupdel, waiting (bounded, with backoff) while another process
 * holds the account files' lock: e.g. a useradd of an smd killed meanwhile still runs.
 */
export async function runLocked(program: string, args: readonly string[], waitMs = ACCOUNT_LOCK_WAIT_MS): Promise<RunResult> {
  const deadline = Date.now() + waitMs;
  for (let delay = 50; ; delay = Math.min(delay * 2, 1_000)) {
    try {
      return await run(program, args, { timeoutMs: 30_000 });
    } catch (err) {
      const stderr = String((err as { details?: { stderr?: unknown } }).details?.stderr ?? '');
      if (!LOCKED.test(stderr) || Date.now() + delay > deadline) throw err;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/**
 * Each service runs as its own system account `smd-<uid>` (user and group with the same id from
 * `services.uidRange`). systemd's User= needs a name it can resolve: a bare numeric uid without
 * a passwd entry fails the start with 217/USER.
 */
export function accountName(uid: number): string {
  return `smd-${uid}`;
}

/**
 * Reads /etc/passwd itself (useradd writes our accounts there); start-up, which checks hundreds,
 * passes the text it read once.
 */
export async function accountExists(uid: number, passwd?: string): Promise<boolean> {
  const text = passwd ?? (await readFile('/etc/passwd', 'utf8'));
  return text.includes(`\n${accountName(uid)}:x:${uid}:`) || text.startsWith(`${accountName(uid)}:x:${uid}:`);
}

/** Creates the account if missing (idempotent, so a crash between steps is harmless). */
export async function ensureAccount(uid: number, passwd?: string): Promise<string> {
  const name = accountName(uid);
  if (await accountExists(uid, passwd)) return name;
  try {
    await run('getent', ['group', name], { timeoutMs: 10_000 });
  } catch {
    await runLocked('groupadd', ['--system', '--gid', String(uid), name]);
  }
  await runLocked('useradd', ['--system', '--uid', String(uid), '--gid', String(uid), '--no-create-home', '--home-dir', '/', '--shell', '/usr/sbin/nologin', '--comment', 'smd service', name]).catch((err: unknown) => {
    throw new SmError('INTERNAL', `cannot create account ${name}: ${(err as Error).message}`, { uid }, { cause: err });
  });
  return name;
}

export async function removeAccount(uid: number): Promise<void> {
  const name = accountName(uid);
  if (await accountExists(uid)) await runLocked('userdel', [name]);
  await runLocked('groupdel', [name]).catch(() => {});
}
