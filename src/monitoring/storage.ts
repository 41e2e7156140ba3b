import { lstat, opendir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { statfsUsage } from '../fs/quota.js';

export interface FolderUsage {
  usedBytes: number;
  /** false when the walk stopped at its bound (usedBytes is then a lower bound). */
  exact: boolean;
  /** 'statfs' for a quota mount (its own file system), 'du' for a walk, 'none' when missing. */
  source: 'statfs' | 'du' | 'none';
  /** Size of the quota file system, when it is one. */
  totalBytes?: number;
}

/**
 * Bytes used in a folder: statfs when it is a mount point of its own (a quota image: no walk
 * needed), else a walk of at most `maxEntries` entries that stays on the folder's file system and
 * counts allocated blocks (what a quota would count), like `du -sx`.
 */
export async function folderUsage(dir: string, opts: { mountPoints: ReadonlySet<string>; maxEntries?: number }): Promise<FolderUsage> {
  const top = await stat(dir).catch(() => null);
  if (!top || !top.isDirectory()) return { usedBytes: 0, exact: true, source: 'none' };
  if (opts.mountPoints.has(dir)) {
    const s = await statfsUsage(dir);
    return { usedBytes: s.usedBytes, exact: true, source: 'statfs', totalBytes: s.totalBytes };
  }
  const max = opts.maxEntries ?? 20_000;
  let used = top.blocks * 512;
  let count = 0;
  const stack = [dir];
  while (stack.length > 0) {
    const d = stack.pop()!;
    const handle = await opendir(d).catch(() => null);
    if (!handle) continue;
    for await (const ent of handle) {
      // Leaving the for-await closes the directory handle.
      if (++count > max) {
        return { usedBytes: used, exact: false, source: 'du' };
      }
      const p = join(d, ent.name);
      const s = await lstat(p).catch(() => null);
      if (!s) continue;
      if (s.dev !== top.dev) continue; // another file system mounted below: not ours to count
      used += s.blocks * 512;
      if (s.isDirectory()) stack.push(p);
    }
  }
  return { usedBytes: used, exact: true, source: 'du' };
}
