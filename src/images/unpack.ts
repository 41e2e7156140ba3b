/**
 * Safe unpacking of one layer tar stream into an (empty, fresh) staging directory.
 *
 * Entries are handled synchronously as tar's Parser emits them. Nothing is ever followed: every
 * path is checked against an in-memory map of what this layer created (so a parent is known to
 * be a real directory, never a symlink), files are created with O_EXCL|O_NOFOLLOW, and a path is
 * unlinked before it is replaced so that a hard link is never written through.
 *
 * Policy (hostile input): regular files, directories, symlinks and hard links only; device nodes,
 * FIFOs and unknown entry types are rejected; setuid/setgid bits are dropped; owners are not kept
 * (everything belongs to the extracting user, root); `..` and absolute entry paths are rejected;
 * relative symlinks must resolve inside the layer (absolute symlink targets are container-root
 * paths and allowed, never followed here); hard links must name an earlier entry of the layer;
 * two entries of one path with different types are rejected. OCI whiteouts become overlayfs
 * whiteouts: `.wh.NAME` → character device 0/0 NAME, `.wh..wh..opq` → xattr
 * trusted.overlay.opaque=y on the directory.
 */
import { closeSync, constants as C, fchmodSync, futimesSync, linkSync, mkdirSync, openSync, symlinkSync, unlinkSync, writeSync, chmodSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import type { ReadEntry } from 'tar';
import { SmError } from '../errors.js';
import { run } from '../exec/run.js';
import { ancestors, checkSymlinkTarget, classifyWhiteout, normalizeEntryPath } from './paths.js';
import type { ImageLimits } from './types.js';

type Kind = 'dir' | 'file' | 'symlink';

interface Node {
  kind: Kind;
  /** Symlink target (raw, as created). */
  target?: string;
  /** Explicit directory entry: mode and mtime to apply at the end. */
  mode?: number;
  mtime?: Date;
}

/** Counters shared by all layers extracted in one call, against the caps. */
export interface Budget {
  limits: ImageLimits;
  entries: number;
  fileBytes: number;
  streamBytes: number;
}

const WRITE_FLAGS = C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW;
const MAX_SYMLINK_HOPS = 40;

function invalid(message: string, entry?: string): SmError {
  return new SmError('INVALID_IMAGE', message, entry === undefined ? undefined : { entry });
}

/** Maps a file system error met while unpacking: resource problems are not the image's fault. */
function fsError(err: unknown, what: string, entry: string): SmError {
  if (err instanceof SmError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  const msg = `${what} ${entry}: ${(err as Error).message}`;
  // A full disk is a limit the operator can act on; other system errors are internal.
  if (code === 'ENOSPC' || code === 'EDQUOT') return new SmError('LIMIT', `no space left while unpacking: ${msg}`, { entry, errno: code }, { cause: err });
  if (['EIO', 'EMFILE', 'ENFILE', 'ENOMEM', 'EROFS'].includes(code)) return new SmError('INTERNAL', msg, { entry, errno: code }, { cause: err });
  return new SmError('INVALID_IMAGE', msg, { entry, errno: code }, { cause: err });
}

export class LayerUnpacker {
  private readonly nodes = new Map<string, Node>();
  private readonly whiteouts = new Set<string>();
  private readonly opaque = new Set<string>();
  private openFd: number | null = null;
  private lastDir = '\0';
  private failure: SmError | null = null;
  entries = 0;
  fileBytes = 0;

  constructor(
    private readonly root: string,
    private readonly budget: Budget,
    private readonly onError: (err: SmError) => void,
  ) {}

  get failed(): boolean {
    return this.failure !== null;
  }

  /** Stops writing: closes an open file; later entries are drained and ignored. */
  abort(): void {
    if (!this.failure) this.failure = invalid('extraction aborted');
    this.closeOpen();
  }

  private fail(err: unknown, entry: string, what = 'cannot unpack'): void {
    const e = fsError(err, what, entry);
    if (!this.failure) this.failure = e;
    this.closeOpen();
    this.onError(e);
  }

  private closeOpen(): void {
    if (this.openFd !== null) {
      try {
        closeSync(this.openFd);
      } catch {
        /* already closed */
      }
      this.openFd = null;
    }
  }

  /** Handles one entry of the layer tar; must be called synchronously from Parser's 'entry'. */
  onEntry(e: ReadEntry): void {
    if (this.failure) return void e.resume();
    try {
      this.entry(e);
    } catch (err) {
      e.resume();
      this.fail(err, e.path);
    }
  }

  /** Parser's 'ignoredEntry': an entry type tar does not know (sparse, volume header...). */
  onIgnored(e: ReadEntry): void {
    e.resume();
    if (this.failure) return;
    this.fail(invalid(`unsupported tar entry type ${e.type} (${e.header?.typeKey ?? '?'}): ${e.path}`, e.path), e.path);
  }

  private entry(e: ReadEntry): void {
    const b = this.budget;
    this.entries++;
    if (++b.entries > b.limits.maxEntries) throw invalid(`layers hold more than maxEntries=${b.limits.maxEntries} entries (at ${e.path})`, e.path);
    const n = normalizeEntryPath(e.path);
    if (!n.ok) throw invalid(`${n.reason}: ${e.path}`, e.path);
    const p = n.path;
    let kind: Kind | 'link';
    switch (e.type) {
      case 'File':
      case 'OldFile':
      case 'ContiguousFile':
        kind = 'file';
        break;
      case 'Directory':
        kind = 'dir';
        break;
      case 'SymbolicLink':
        kind = 'symlink';
        break;
      case 'Link':
        kind = 'link';
        break;
      case 'CharacterDevice':
      case 'BlockDevice':
        throw invalid(`device node not allowed: ${e.path}`, e.path);
      case 'FIFO':
        throw invalid(`FIFO not allowed: ${e.path}`, e.path);
      default:
        throw invalid(`unsupported tar entry type ${e.type}: ${e.path}`, e.path);
    }
    if (p === '') {
      if (kind !== 'dir') throw invalid(`entry at the layer root must be a directory: ${e.path}`, e.path);
      return void e.resume();
    }
    this.ensureParents(p);

    const wh = classifyWhiteout(p);
    if (wh.kind !== 'none') {
      if (wh.kind === 'opaque') this.opaque.add(wh.dir);
      else if (wh.kind === 'whiteout') this.whiteouts.add(wh.target);
      return void e.resume();
    }

    const abs = join(this.root, p);
    const prev = this.nodes.get(p);
    // Hard links are files, or symlinks when they link a symlink: resolve their kind first.
    let linkTarget: { path: string; node: Node } | null = null;
    if (kind === 'link') {
      const t = normalizeEntryPath(e.linkpath ?? '');
      if (!t.ok) throw invalid(`hard link ${e.path} → ${e.linkpath}: ${t.reason}`, e.path);
      const node = this.nodes.get(t.path);
      if (!node) throw invalid(`hard link ${e.path} points outside the layer or to a later entry (${e.linkpath})`, e.path);
      if (node.kind === 'dir') throw invalid(`hard link ${e.path} points to a directory (${e.linkpath})`, e.path);
      linkTarget = { path: t.path, node };
    }
    const newKind: Kind = kind === 'link' ? linkTarget!.node.kind : kind;
    if (prev && prev.kind !== newKind) throw invalid(`two entries for ${p} with different types (${prev.kind} then ${newKind})`, e.path);
    if (linkTarget && linkTarget.path === p) return void e.resume(); // a link to itself: nothing to do

    switch (kind) {
      case 'dir': {
        if (!prev) mkdirSync(abs, 0o755);
        this.nodes.set(p, { kind: 'dir', mode: (e.mode ?? 0o755) & 0o1777, ...(e.mtime ? { mtime: e.mtime } : {}) });
        return void e.resume();
      }
      case 'symlink': {
        const target = e.linkpath ?? '';
        const chk = checkSymlinkTarget(p, target);
        if (!chk.ok) throw invalid(`${chk.reason}: ${e.path}`, e.path);
        if (prev) unlinkSync(abs);
        symlinkSync(target, abs);
        this.nodes.set(p, { kind: 'symlink', target });
        return void e.resume();
      }
      case 'link': {
        if (prev) unlinkSync(abs);
        linkSync(join(this.root, linkTarget!.path), abs);
        this.nodes.set(p, linkTarget!.node.kind === 'symlink' ? { kind: 'symlink', target: linkTarget!.node.target! } : { kind: 'file' });
        return void e.resume();
      }
      case 'file': {
        if (b.fileBytes + e.size > b.limits.maxUnpackedBytes) {
          throw invalid(`unpacked size exceeds maxUnpackedBytes=${b.limits.maxUnpackedBytes} (at ${e.path}, ${e.size} bytes)`, e.path);
        }
        b.fileBytes += e.size;
        this.fileBytes += e.size;
        if (prev) unlinkSync(abs);
        const fd = openSync(abs, WRITE_FLAGS, 0o600);
        this.openFd = fd;
        this.nodes.set(p, { kind: 'file' });
        const mode = (e.mode ?? 0o644) & 0o777; // setuid, setgid and sticky bits dropped
        const mtime = e.mtime;
        e.on('end', () => {
          if (this.failure || this.openFd !== fd) return;
          try {
            fchmodSync(fd, mode);
            if (mtime) futimesSync(fd, mtime, mtime);
            closeSync(fd);
            this.openFd = null;
          } catch (err) {
            this.fail(err, e.path);
          }
        });
        e.on('data', (chunk: Buffer) => {
          if (this.failure || this.openFd !== fd) return;
          try {
            let off = 0;
            while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off);
          } catch (err) {
            this.fail(err, e.path, 'cannot write');
          }
        });
        return;
      }
    }
  }

  /** Makes sure every ancestor of `p` is a real directory of this layer, creating missing ones. */
  private ensureParents(p: string): void {
    const slash = p.lastIndexOf('/');
    if (slash === -1) return;
    const dir = p.slice(0, slash);
    if (dir === this.lastDir) return;
    for (const a of [...ancestors(p)]) {
      const node = this.nodes.get(a);
      if (!node) {
        mkdirSync(join(this.root, a), 0o755);
        // mode applied explicitly at the end: mkdir's mode is cut by the process umask
        this.nodes.set(a, { kind: 'dir', mode: 0o755 });
      } else if (node.kind === 'symlink') {
        throw invalid(`entry would be written through symlink ${a}: ${p}`, p);
      } else if (node.kind !== 'dir') {
        throw invalid(`parent ${a} is not a directory: ${p}`, p);
      }
    }
    this.lastDir = dir;
  }

  /**
   * Resolves a symlink through the symlinks of this layer; false when a relative chain leaves
   * the root. An absolute target switches to container-root semantics (`..` stops at `/`).
   */
  private symlinkStaysInside(path: string, target: string): boolean {
    const cur = target.startsWith('/') ? [] : path.split('/').slice(0, -1);
    let clamp = target.startsWith('/');
    const queue = target.split('/');
    let hops = 0;
    while (queue.length > 0) {
      const c = queue.shift()!;
      if (c === '' || c === '.') continue;
      if (c === '..') {
        if (cur.length === 0) {
          if (clamp) continue;
          return false;
        }
        cur.pop();
        continue;
      }
      cur.push(c);
      const node = this.nodes.get(cur.join('/'));
      if (node?.kind === 'symlink') {
        if (++hops > MAX_SYMLINK_HOPS) return false;
        cur.pop();
        if (node.target!.startsWith('/')) {
          cur.length = 0;
          clamp = true;
        }
        queue.unshift(...node.target!.split('/'));
      }
    }
    return true;
  }

  /**
   * After the last entry: checks symlink chains, creates the overlayfs whiteouts and opaque
   * markers, and applies directory modes and times.
   */
  async finish(): Promise<void> {
    if (this.failure) throw this.failure;
    this.closeOpen();
    for (const [p, node] of this.nodes) {
      if (node.kind === 'symlink' && !this.symlinkStaysInside(p, node.target!)) {
        throw invalid(`symlink points outside the layer through other symlinks, or loops (${node.target}): ${p}`, p);
      }
    }
    const devices: string[] = [];
    for (const t of this.whiteouts) {
      // A whiteout hides lower layers only: an entry of this layer with that name wins.
      if (!this.nodes.has(t)) devices.push(join(this.root, t));
    }
    await makeWhiteouts(devices);
    const opaque = [...this.opaque].filter((d) => d === '' || this.nodes.get(d)?.kind === 'dir').map((d) => join(this.root, d));
    await setOpaque(opaque);
    // Deepest first, so that setting a child's time does not change its parent's afterwards.
    const dirs = [...this.nodes].filter(([, n]) => n.kind === 'dir' && n.mode !== undefined).sort((a, b) => b[0].length - a[0].length);
    for (const [p, n] of dirs) {
      const abs = join(this.root, p);
      chmodSync(abs, n.mode!);
      if (n.mtime) utimesSync(abs, n.mtime, n.mtime);
    }
  }
}

/** overlayfs whiteouts: character devices 0/0 (needs CAP_MKNOD; smd runs as root). */
async function makeWhiteouts(paths: string[]): Promise<void> {
  const POOL = 8;
  for (let i = 0; i < paths.length; i += POOL) {
    await Promise.all(paths.slice(i, i + POOL).map((p) => run('mknod', ['-m', '0000', p, 'c', '0', '0'])));
  }
}

let setfattrMissing = false;

/** overlayfs opaque directories: xattr trusted.overlay.opaque=y (setfattr, else python3). */
export async function setOpaque(dirs: string[]): Promise<void> {
  if (dirs.length === 0) return;
  const BATCH = 200;
  for (let i = 0; i < dirs.length; i += BATCH) {
    const batch = dirs.slice(i, i + BATCH);
    if (!setfattrMissing) {
      try {
        await run('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', '--', ...batch]);
        continue;
      } catch (err) {
        if (!(err instanceof SmError && err.code === 'UNAVAILABLE')) throw err;
        setfattrMissing = true;
      }
    }
    try {
      await run('python3', ['-c', 'import os,sys\nfor p in sys.argv[1:]: os.setxattr(p, "trusted.overlay.opaque", b"y", follow_symlinks=False)', ...batch]);
    } catch (err) {
      if (err instanceof SmError && err.code === 'UNAVAILABLE') {
        throw new SmError('UNAVAILABLE', 'marking opaque directories needs setfattr (Debian package "attr") or python3', { dirs: batch.length }, { cause: err });
      }
      throw err;
    }
  }
}
