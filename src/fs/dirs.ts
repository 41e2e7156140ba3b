import { lstatSync } from 'node:fs';
import { chmod, chown, mkdir } from 'node:fs/promises';

/**
 * A directory that exists with this owner and mode. One lstat when it already does, as on every
 * start for every service: mkdir + chown + chmod each time cost ~60 ms of reconciliation with 200
 * services (npm run bench -- services). The lstat is synchronous: a few µs on a local directory,
 * where the thread-pool round trip of an async one cost ~12 ms of that start for 400 folders.
 * Missing parents are created too.
 */
export async function ensureOwnedDir(dir: string, owner: { uid: number; gid: number }, mode: number): Promise<void> {
  const st = lstatSync(dir, { throwIfNoEntry: false }) ?? null;
  if (st && !st.isDirectory()) throw new Error(`${dir} exists and is not a directory`);
  if (st && st.uid === owner.uid && st.gid === owner.gid && (st.mode & 0o7777) === mode) return;
  if (!st) await mkdir(dir, { recursive: true, mode });
  await chown(dir, owner.uid, owner.gid);
  await chmod(dir, mode);
}
