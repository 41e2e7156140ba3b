import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { ensureOwnedDir } from '../fs/dirs.js';
import { mountOverlay, mountPoints, unmount } from '../fs/mounts.js';
import { MIN_QUOTA_BYTES, ensureQuotaMount, quotaImagePath, releaseQuotaMount, removeQuota, resizeQuota } from '../fs/quota.js';
import { writeInPlace } from '../net/dns.js';
import { ensureAccount, removeAccount } from './accounts.js';

export interface Owner {
  uid: number;
  gid: number;
}

/**
 * Everything the services domain does to the host besides systemd: accounts, folders, quota
 * file systems, overlay mounts. The daemon passes `HostSystem`; unit tests pass a fake.
 */
export interface HostProvisioning {
  /** /etc/passwd as text (start-up reads it once for hundreds of account checks). */
  readPasswd(): Promise<string>;
  /** Creates the service account `smd-<uid>` if missing; idempotent. */
  ensureAccount(uid: number, passwd?: string): Promise<string>;
  removeAccount(uid: number): Promise<void>;
  /** A plain folder (the service directory). */
  ensureDir(dir: string): Promise<void>;
  /** A folder only `owner` may enter, with a quota file system of `limitBytes` when given. */
  ensureStorage(dir: string, owner: Owner, limitBytes: number | null): Promise<void>;
  hasQuota(dir: string): boolean;
  resizeQuota(dir: string, limitBytes: number): Promise<void>;
  /** Unmounts the quota file system of `dir` (its image stays). */
  releaseQuota(dir: string): Promise<void>;
  /** Unmounts and deletes the quota file system of `dir`. */
  removeQuota(dir: string): Promise<void>;
  mountOverlay(target: string, lowers: readonly string[], upper: string, work: string): Promise<void>;
  /** Returns whether something was mounted there. */
  unmount(target: string): Promise<boolean>;
  mountPoints(): Promise<string[]>;
  /** Names in a folder; none when it does not exist. */
  listDir(dir: string): Promise<string[]>;
  /** rm -rf */
  remove(path: string): Promise<void>;
  exists(path: string): boolean;
  /** A small file's text, or null when it cannot be read. Synchronous: cheap for unit files. */
  readText(path: string): string | null;
  /** Rewrites a small file in place (a bind-mounted file keeps its inode), only when it differs. */
  writeInPlace(path: string, text: string): Promise<boolean>;
}

/** The real host: src/services/accounts.ts, src/fs/quota.ts and src/fs/mounts.ts. */
export class HostSystem implements HostProvisioning {
  readPasswd(): Promise<string> {
    return readFile('/etc/passwd', 'utf8');
  }

  ensureAccount(uid: number, passwd?: string): Promise<string> {
    return ensureAccount(uid, passwd);
  }

  removeAccount(uid: number): Promise<void> {
    return removeAccount(uid);
  }

  async ensureDir(dir: string): Promise<void> {
    if (statSync(dir, { throwIfNoEntry: false })?.isDirectory()) return; // as ensureOwnedDir: the usual case, without a thread-pool hop
    await mkdir(dir, { recursive: true });
  }

  async ensureStorage(dir: string, owner: Owner, limitBytes: number | null): Promise<void> {
    // Only the service's own uid may enter its folders, also from the host.
    await ensureOwnedDir(dir, owner, 0o700);
    // The folder is its own small file system, so a full one harms nothing else.
    if (!limitBytes) return;
    await ensureQuotaMount(dir, Math.max(limitBytes, MIN_QUOTA_BYTES), owner);
    await ensureOwnedDir(dir, owner, 0o700); // the mounted file system's root
  }

  hasQuota(dir: string): boolean {
    return existsSync(quotaImagePath(dir));
  }

  async resizeQuota(dir: string, limitBytes: number): Promise<void> {
    await resizeQuota(dir, Math.max(limitBytes, MIN_QUOTA_BYTES));
  }

  async releaseQuota(dir: string): Promise<void> {
    await releaseQuotaMount(dir);
  }

  removeQuota(dir: string): Promise<void> {
    return removeQuota(dir);
  }

  mountOverlay(target: string, lowers: readonly string[], upper: string, work: string): Promise<void> {
    return mountOverlay(target, lowers, upper, work);
  }

  unmount(target: string): Promise<boolean> {
    return unmount(target);
  }

  mountPoints(): Promise<string[]> {
    return mountPoints();
  }

  async listDir(dir: string): Promise<string[]> {
    try {
      return await readdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  remove(path: string): Promise<void> {
    return rm(path, { recursive: true, force: true });
  }

  exists(path: string): boolean {
    return existsSync(path);
  }

  readText(path: string): string | null {
    try {
      return readFileSync(path, 'utf8');
    } catch {
      return null;
    }
  }

  writeInPlace(path: string, text: string): Promise<boolean> {
    return writeInPlace(path, text);
  }
}
