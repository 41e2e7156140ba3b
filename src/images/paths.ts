/** Pure path-safety rules for entries of layer archives. No file system access here. */
import { posix } from 'node:path';

export type PathCheck = { ok: true; path: string } | { ok: false; reason: string };

/**
 * Normalises an archive entry path to a relative path inside the layer root ('' is the root).
 * Refuses absolute paths, `..` components and NUL bytes instead of silently rewriting them.
 */
export function normalizeEntryPath(raw: string): PathCheck {
  if (raw.includes('\0')) return { ok: false, reason: 'path contains a NUL byte' };
  if (raw.startsWith('/')) return { ok: false, reason: 'absolute path' };
  const parts: string[] = [];
  for (const part of raw.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') return { ok: false, reason: 'path traversal (..)' };
    parts.push(part);
  }
  return { ok: true, path: parts.join('/') };
}

/**
 * Checks where a symlink at `linkPath` (normalised, relative to the root) with target `target`
 * resolves, lexically. Relative targets must stay inside the root. Absolute targets are read as
 * container-root paths (how the kernel resolves them once the layers are the service's root
 * directory), so they cannot leave it; they are never followed during extraction.
 */
export function checkSymlinkTarget(linkPath: string, target: string): PathCheck {
  if (target === '') return { ok: false, reason: 'empty symlink target' };
  if (target.includes('\0')) return { ok: false, reason: 'symlink target contains a NUL byte' };
  if (target.startsWith('/')) return { ok: true, path: posix.normalize(target).replace(/^\/+/, '') };
  const resolved = posix.normalize(posix.join(posix.dirname(linkPath), target));
  if (resolved === '..' || resolved.startsWith('../')) return { ok: false, reason: `symlink points outside the layer (${target})` };
  return { ok: true, path: resolved === '.' ? '' : resolved };
}

/** Proper ancestors of a normalised path, shortest first: 'a/b/c' → ['a', 'a/b']. */
export function ancestors(path: string): string[] {
  const out: string[] = [];
  let i = path.indexOf('/');
  while (i !== -1) {
    out.push(path.slice(0, i));
    i = path.indexOf('/', i + 1);
  }
  return out;
}

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_WHITEOUT = '.wh..wh..opq';

export type WhiteoutKind = { kind: 'none' } | { kind: 'opaque'; dir: string } | { kind: 'whiteout'; target: string } | { kind: 'meta' };

/** Classifies an OCI whiteout entry by its normalised path. */
export function classifyWhiteout(path: string): WhiteoutKind {
  const slash = path.lastIndexOf('/');
  const base = path.slice(slash + 1);
  if (!base.startsWith(WHITEOUT_PREFIX)) return { kind: 'none' };
  const dir = slash === -1 ? '' : path.slice(0, slash);
  if (base === OPAQUE_WHITEOUT) return { kind: 'opaque', dir };
  // Other `.wh..wh.*` names are aufs bookkeeping (plnk, aufs, orph): not part of the tree.
  if (base.startsWith(WHITEOUT_PREFIX + WHITEOUT_PREFIX)) return { kind: 'meta' };
  const name = base.slice(WHITEOUT_PREFIX.length);
  if (name === '' || name === '.' || name === '..') return { kind: 'meta' };
  return { kind: 'whiteout', target: dir === '' ? name : `${dir}/${name}` };
}

/** `sha256:<64 lowercase hex>` → the hex, else null. */
export function sha256Hex(digest: string): string | null {
  const m = /^sha256:([a-f0-9]{64})$/.exec(digest);
  return m ? m[1]! : null;
}

/** Host architecture in OCI spelling. */
export function hostArchitecture(): string {
  switch (process.arch) {
    case 'x64':
      return 'amd64';
    case 'ia32':
      return '386';
    case 'ppc64':
      return 'ppc64le';
    default:
      return process.arch; // arm, arm64, s390x, riscv64, mips64el...
  }
}
