/**
 * Kernel-enforced size limits on directories (storageLimit, stateLimit).
 *
 * Choice: one loop-mounted ext4 image per limited folder. The folder `<dir>` gets a sparse image
 * `<dir>.img` beside it, of exactly the limit size, formatted with `mkfs.ext4` and mounted onto
 * `<dir>` with `-o loop,nosuid,nodev`. A write past the limit fails with ENOSPC inside that file
 * system only: the service sees a full disk, the data directory and every other folder are not
 * touched.
 *
 * Why not project quotas (ext4/xfs `prjquota`) or user quotas: they need the data file system to
 * be created or mounted with quota options (`-O project,quota`, `prjquota`), which smd cannot
 * assume on a device it does not own, and user quotas would limit a service's uid across all its
 * folders rather than one (users, service) folder. A loop image needs only the loop driver
 * (/dev/loop-control) and e2fsprogs, works on any backing file system, is sparse (costs only
 * what is written), and survives a restart as a plain file. Costs: one loop device per mounted
 * folder, a few percent of the limit for ext4 metadata (usable space is slightly below the
 * limit; no blocks are reserved for root: `-m 0`), and the image is not shrunk when files are
 * deleted inside (it stays sparse only where nothing was ever written).
 *
 * Crash safety: the image is formatted under a temporary name and renamed into place, so an image
 * at `<dir>.img` is always a complete file system; mounting is idempotent (an existing mount is
 * kept). `mount -o loop` sets the loop device's autoclear flag, so unmounting detaches it.
 *
 * All functions act in the calling process's mount namespace (the daemon's, which is the one its
 * units inherit).
 */
import { chown, mkdir, open, readdir, readFile, rename, rm, stat, statfs, truncate } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { SmError } from '../errors.js';
import { run } from '../exec/run.js';
import { isMountPoint, mountPoints } from './mounts.js';

/** Smallest image mkfs.ext4 formats reliably (and that holds its own metadata). */
export const MIN_QUOTA_BYTES = 256 * 1024;

export interface QuotaOwner {
  uid: number;
  gid: number;
}

export interface QuotaUsage {
  /** Size of the file system (the limit, minus what ext4 keeps for itself). */
  totalBytes: number;
  usedBytes: number;
  availableBytes: number;
}

export interface QuotaState {
  dir: string;
  image: string;
  /** The image's size: the configured limit. */
  limitBytes: number;
  mounted: boolean;
}

export function quotaImagePath(dir: string): string {
  const clean = dir.replace(/\/+$/, '');
  return join(dirname(clean), `${basename(clean)}.img`);
}

const UNSAFE = /[,\n\\]/;

function checkArgs(dir: string, limitBytes?: number): void {
  if (!dir.startsWith('/') || UNSAFE.test(dir) || dir.split('/').includes('..')) throw new SmError('INTERNAL', `quota: unusable directory ${JSON.stringify(dir)}`, { dir });
  if (limitBytes !== undefined && (!Number.isSafeInteger(limitBytes) || limitBytes < MIN_QUOTA_BYTES)) {
    throw new SmError('LIMIT', `quota: limit ${limitBytes} is below the minimum of ${MIN_QUOTA_BYTES} bytes`, { dir, limitBytes, min: MIN_QUOTA_BYTES });
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Creates a sparse file of `size` bytes and formats it as ext4 owned by `owner`; atomic by rename. */
async function createImage(image: string, size: number, owner: QuotaOwner): Promise<void> {
  const tmp = `${image}.tmp`;
  await rm(tmp, { force: true });
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
  try {
    // -m 0: no blocks reserved for root (the service should get the whole limit);
    // root_owner: the file system's root directory belongs to the service from the start.
    await run('mkfs.ext4', ['-q', '-F', '-m', '0', '-E', `root_owner=${owner.uid}:${owner.gid}`, tmp], { timeoutMs: 60_000 });
    const done = await open(tmp, 'r');
    try {
      await done.sync();
    } finally {
      await done.close();
    }
    await rename(tmp, image);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

async function mountImage(image: string, dir: string): Promise<void> {
  await run('mount', ['-t', 'ext4', '-o', 'loop,nosuid,nodev', image, dir], { timeoutMs: 30_000 });
}

/** Loop devices backed by `image` (normally none once unmounted: mount -o loop sets autoclear). */
async function loopDevicesOf(image: string): Promise<string[]> {
  const { stdout } = await run('losetup', ['-j', image], { timeoutMs: 10_000 });
  return stdout
    .split('\n')
    .map((l) => l.split(':')[0]!.trim())
    .filter((d) => d.startsWith('/dev/loop'));
}

/** The loop device mounted at `dir`, from /proc/self/mountinfo (null if `dir` is no loop mount). */
async function mountedDevice(dir: string): Promise<string | null> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const decode = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  let found: string | null = null;
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length < 10 || decode(f[4]!) !== dir) continue;
    const sep = f.indexOf('-');
    const source = sep > 0 ? f[sep + 2] ?? null : null;
    found = source; // the last one is the top of the stack
  }
  return found && found.startsWith('/dev/loop') ? found : null;
}

/**
 * Makes `dir` a mount of its own ext4 image of `limitBytes`, owned by `owner`. Idempotent: an
 * existing mount is kept (its owner is set again); an existing image is mounted as it is (use
 * resizeQuota to change its size). Files already in an unmounted `dir` are moved into the new
 * file system; if they do not fit, SmError LIMIT and `dir` is left as it was.
 */
export async function ensureQuotaMount(dir: string, limitBytes: number, owner: QuotaOwner): Promise<QuotaState> {
  checkArgs(dir, limitBytes);
  const image = quotaImagePath(dir);
  await mkdir(dir, { recursive: true });
  if (await isMountPoint(dir)) {
    if ((await mountedDevice(dir)) === null) throw new SmError('CONFLICT', `quota: ${dir} is already a mount point, but not a loop mount`, { dir });
    await chown(dir, owner.uid, owner.gid);
    return { dir, image, limitBytes: (await stat(image)).size, mounted: true };
  }
  const fresh = !(await exists(image));
  if (fresh) await createImage(image, limitBytes, owner);
  const existing = fresh ? await readdir(dir) : [];
  if (existing.length > 0) {
    // Move what is there into the image: mount it aside, copy, then swap.
    const aside = `${dir}.quota-migrate`;
    await mkdir(aside, { recursive: true });
    await mountImage(image, aside);
    try {
      await run('cp', ['-a', '--', ...existing.map((e) => join(dir, e)), aside + '/'], { timeoutMs: 600_000 });
    } catch (err) {
      await run('umount', [aside], { timeoutMs: 30_000 });
      await rm(aside, { recursive: true, force: true });
      await rm(image, { force: true });
      throw new SmError('LIMIT', `quota: the ${existing.length} entries in ${dir} do not fit in ${limitBytes} bytes`, { dir, limitBytes }, { cause: err });
    }
    await run('umount', [aside], { timeoutMs: 30_000 });
    await rm(aside, { recursive: true, force: true });
    for (const e of existing) await rm(join(dir, e), { recursive: true, force: true });
  }
  await mountImage(image, dir);
  await chown(dir, owner.uid, owner.gid);
  return { dir, image, limitBytes: (await stat(image)).size, mounted: true };
}

/** Unmounts `dir` (keeping the image and its data); detaches its loop device. Returns whether it was mounted. */
export async function releaseQuotaMount(dir: string): Promise<boolean> {
  checkArgs(dir);
  const image = quotaImagePath(dir);
  let was = false;
  // A folder mounted twice (should not happen) is unmounted until nothing is left.
  for (let i = 0; i < 8 && (await isMountPoint(dir)); i++) {
    was = true;
    try {
      await run('umount', [dir], { timeoutMs: 30_000 });
    } catch {
      // Busy (a process still has files open): detach lazily; the kernel finishes when they close.
      await run('umount', ['-l', dir], { timeoutMs: 30_000 });
    }
  }
  if (await exists(image)) {
    const failed: { dev: string; err: unknown }[] = [];
    for (const dev of await loopDevicesOf(image)) {
      await run('losetup', ['-d', dev], { timeoutMs: 10_000 }).catch((err: unknown) => failed.push({ dev, err }));
    }
    // A device that autoclear detached between the listing and `losetup -d` is fine; one still attached is not.
    const left = failed.length ? await loopDevicesOf(image) : [];
    const stuck = failed.filter((f) => left.includes(f.dev));
    if (stuck.length) throw new SmError('INTERNAL', `loop device ${stuck.map((f) => f.dev).join(', ')} of ${image} not detached`, { image, devices: stuck.map((f) => f.dev) }, { cause: stuck[0]!.err });
  }
  return was;
}

/** Unmounts `dir` and deletes its image (and with it the data). */
export async function removeQuota(dir: string): Promise<void> {
  await releaseQuotaMount(dir);
  await rm(quotaImagePath(dir), { force: true });
  await rm(`${quotaImagePath(dir)}.tmp`, { force: true });
}

/**
 * Changes the limit. Growing is tried while mounted (the image is extended, the loop device told,
 * and ext4 resized online); where the kernel refuses online resizing (EPERM), and always for
 * shrinking, the file system is unmounted for a moment and resized offline (e2fsck + resize2fs).
 * Offline resizing needs the folder not in use (stop the service first), else SmError CONFLICT;
 * a shrink below the data is refused with LIMIT. The folder is mounted again afterwards if it
 * was before.
 */
export async function resizeQuota(dir: string, limitBytes: number): Promise<QuotaState> {
  checkArgs(dir, limitBytes);
  const image = quotaImagePath(dir);
  if (!(await exists(image))) throw new SmError('NOT_FOUND', `quota: no image for ${dir}`, { dir });
  const current = (await stat(image)).size;
  const mounted = await isMountPoint(dir);
  if (limitBytes === current) return { dir, image, limitBytes, mounted };
  const blocks = (n: number) => `${Math.floor(n / 1024)}K`;
  if (limitBytes > current && mounted) {
    const dev = await mountedDevice(dir);
    if (!dev) throw new SmError('INTERNAL', `quota: ${dir} is mounted but not from a loop device`, { dir });
    await truncate(image, limitBytes);
    try {
      await run('losetup', ['-c', dev], { timeoutMs: 10_000 });
      await run('resize2fs', [dev, blocks(limitBytes)], { timeoutMs: 120_000 });
      return { dir, image, limitBytes, mounted };
    } catch {
      // Some kernels refuse online resizing (EPERM, seen in VMs); fall through to offline.
    }
  }
  if (mounted) {
    // Never lazily: e2fsck and resize2fs must not touch an image that is still mounted.
    try {
      await run('umount', [dir], { timeoutMs: 30_000 });
    } catch (err) {
      throw new SmError('CONFLICT', `quota: ${dir} is in use; stop the service to resize its quota offline`, { dir }, { cause: err });
    }
  }
  try {
    await run('e2fsck', ['-f', '-p', image], { timeoutMs: 120_000 });
    if (limitBytes > current) {
      await truncate(image, limitBytes);
      await run('resize2fs', [image, blocks(limitBytes)], { timeoutMs: 120_000 });
    } else {
      try {
        await run('resize2fs', [image, blocks(limitBytes)], { timeoutMs: 120_000 });
      } catch (err) {
        throw new SmError('LIMIT', `quota: the data in ${dir} does not fit in ${limitBytes} bytes`, { dir, limitBytes }, { cause: err });
      }
      await truncate(image, limitBytes);
    }
  } finally {
    if (mounted) await mountImage(image, dir);
  }
  return { dir, image, limitBytes, mounted };
}

/** Usage of a quota mount from statfs (cheap: no walk); null when `dir` is not a mount point. */
export async function quotaUsage(dir: string): Promise<QuotaUsage | null> {
  if (!(await isMountPoint(dir))) return null;
  return statfsUsage(dir);
}

export async function statfsUsage(path: string): Promise<QuotaUsage> {
  const s = await statfs(path);
  const totalBytes = s.blocks * s.bsize;
  return { totalBytes, usedBytes: (s.blocks - s.bfree) * s.bsize, availableBytes: s.bavail * s.bsize };
}

/** Quota mounts currently mounted below `root` (for reconciliation at start and for clean-up). */
export async function quotaMountsUnder(root: string): Promise<string[]> {
  const prefix = root.replace(/\/+$/, '') + '/';
  const out: string[] = [];
  for (const m of await mountPoints()) {
    if (m.startsWith(prefix) && (await exists(quotaImagePath(m))) && (await mountedDevice(m)) !== null) out.push(m);
  }
  return out;
}
