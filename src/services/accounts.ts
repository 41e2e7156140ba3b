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

export async function accountExists(uid: number): Promise<boolean> {
  try {
    const { stdout } = await run('getent', ['passwd', accountName(uid)], { timeoutMs: 10_000 });
    return stdout.split(':')[2] === String(uid);
  } catch {
    return false;
  }
}

/** Creates the account if missing (idempotent, so a crash between steps is harmless). */
export async function ensureAccount(uid: number): Promise<string> {
  const name = accountName(uid);
  if (await accountExists(uid)) return name;
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
