import { readFile } from 'node:fs/promises';
import { SmError } from '../errors.js';
import { run } from '../exec/run.js';

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
    await run('groupadd', ['--system', '--gid', String(uid), name], { timeoutMs: 30_000 });
  }
  await run('useradd', ['--system', '--uid', String(uid), '--gid', String(uid), '--no-create-home', '--home-dir', '/', '--shell', '/usr/sbin/nologin', '--comment', 'smd service', name], {
    timeoutMs: 30_000,
  }).catch((err: unknown) => {
    throw new SmError('INTERNAL', `cannot create account ${name}: ${(err as Error).message}`, { uid }, { cause: err });
  });
  return name;
}

export async function removeAccount(uid: number): Promise<void> {
  const name = accountName(uid);
  if (await accountExists(uid)) await run('userdel', [name], { timeoutMs: 30_000 });
  await run('groupdel', [name], { timeoutMs: 30_000 }).catch(() => {});
}
