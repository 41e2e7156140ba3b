import { readFile, mkdir } from 'node:fs/promises';
import { SmError } from '../errors.js';
import { run } from '../exec/run.js';

/** Mount points from /proc/self/mountinfo (field 5, octal escapes decoded). */
export async function mountPoints(): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => line.split(' ')[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
}

export async function isMountPoint(path: string): Promise<boolean> {
  return (await mountPoints()).includes(path);
}

const UNSAFE_OPTION_CHARS = /[,:\\\n]/;

/**
 * Mounts an overlay at `target`: `lowers` top-most first (read-only), `upper` and `work` on the
 * same file system. Idempotent: an existing mount at `target` is left as it is.
 */
export async function mountOverlay(target: string, lowers: readonly string[], upper: string, work: string): Promise<void> {
  for (const p of [target, upper, work, ...lowers]) {
    if (UNSAFE_OPTION_CHARS.test(p)) throw new SmError('INTERNAL', `path not usable in overlay options: ${p}`, { path: p });
  }
  if (lowers.length === 0) throw new SmError('INTERNAL', 'overlay needs at least one lower layer');
  if (await isMountPoint(target)) return;
  await Promise.all([mkdir(target, { recursive: true }), mkdir(upper, { recursive: true }), mkdir(work, { recursive: true })]);
  await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lowers.join(':')},upperdir=${upper},workdir=${work}`, target], { timeoutMs: 30_000 });
}

/** Unmounts `target` if mounted; a busy mount is detached lazily rather than left behind. */
export async function unmount(target: string): Promise<boolean> {
  if (!(await isMountPoint(target))) return false;
  try {
    await run('umount', [target], { timeoutMs: 30_000 });
  } catch {
    await run('umount', ['-l', target], { timeoutMs: 30_000 });
  }
  return true;
}
