// Helpers for the image tests: build OCI archives (also hostile ones, with raw tar headers) and
// check that a rejected extraction left nothing behind. Run directly, it checks itself.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
// Plain ESM shared with the example builder and the benchmark.
import { gzip, imageLayout, json, MT, sha256, tarBuffer, writeArchive } from '../../scripts/images/oci.mjs';
import { extractLayers, readImage } from '../../src/images/index.js';
import type { ExtractResult, ImageInfo, ImageLimits } from '../../src/images/index.js';

export { gzip, imageLayout, json, MT, sha256, tarBuffer, writeArchive };

export interface TarEntrySpec {
  path: string;
  type?: string;
  data?: Buffer | string;
  mode?: number;
  linkpath?: string;
  size?: number;
  devmajor?: number;
  devminor?: number;
  badChecksum?: boolean;
  uid?: number;
  gid?: number;
}

interface Teardown {
  teardown(fn: () => void | Promise<void>): void;
}

/** A fresh temp directory, removed at the end of the test. */
export function tempDir(t: Teardown, prefix = 'smd-img-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface LayerSpec {
  entries?: TarEntrySpec[];
  /** Raw blob, used as is (overrides entries). */
  data?: Buffer;
  gzip?: boolean;
  mediaType?: string;
}

/** Builds a one-manifest OCI archive from layer specs; returns its path and layout. */
export function buildImage(
  dir: string,
  name: string,
  layers: LayerSpec[],
  opts: { config?: object; annotations?: Record<string, string>; refName?: string; gzipArchive?: boolean; edit?: (files: { path: string; data: Buffer }[]) => { path: string; data: Buffer }[] } = {},
) {
  const blobs = layers.map((l) => {
    const raw = l.data ?? tarBuffer(l.entries ?? []);
    const data = l.data ? raw : l.gzip === false ? raw : gzip(raw);
    return { data, mediaType: l.mediaType ?? (l.data ? (raw[0] === 0x1f ? MT.layerTarGzip : MT.layerTar) : l.gzip === false ? MT.layerTar : MT.layerTarGzip) };
  });
  const layout = imageLayout({ layers: blobs, config: opts.config ?? { Entrypoint: ['/bin/sh'] }, ...(opts.annotations ? { annotations: opts.annotations } : {}), ...(opts.refName ? { refName: opts.refName } : {}) });
  const files = opts.edit ? opts.edit(layout.files) : layout.files;
  const path = join(dir, name);
  writeArchive(path, files, { gzip: opts.gzipArchive ?? false });
  return { path, layout };
}

/** Every path below dir (relative), sorted: a snapshot to compare before/after. */
export function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const d of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${d.name}` : d.name;
      out.push(p);
      if (d.isDirectory()) walk(p);
    }
  };
  walk('');
  return out.sort();
}

/** readImage + extractLayers of every layer into `${root}/layers/<hex>`. */
export async function install(archive: string, root: string, limits?: Partial<ImageLimits>, ref?: string): Promise<{ image: ImageInfo; result: ExtractResult }> {
  const image = await readImage(archive, { ...(limits ? { limits } : {}), ...(ref ? { ref } : {}) });
  mkdirSync(join(root, 'layers'), { recursive: true });
  const result = await extractLayers(image, {
    wanted: new Set(image.layers.map((l) => l.digest)),
    destFor: (d) => join(root, 'layers', d.slice(7)),
    ...(limits ? { limits } : {}),
  });
  return { image, result };
}

/** Replaces the bytes of a file of the archive (keeping its name). */
export function replaceFile(files: { path: string; data: Buffer }[], path: string, data: Buffer) {
  return files.map((f) => (f.path === path ? { path, data } : f));
}

export function blobPath(digest: string): string {
  return `blobs/sha256/${digest.slice(7)}`;
}

/** Reads an xattr with python3 (Node has no xattr API); null when absent or not readable. */
export function getXattr(path: string, name: string): string | null {
  try {
    return execFileSync('python3', ['-c', 'import os,sys\ntry: sys.stdout.write(os.getxattr(sys.argv[1], sys.argv[2]).decode())\nexcept OSError: sys.exit(3)', path, name], { encoding: 'utf8' });
  } catch {
    return null;
  }
}

// Self-check when tap runs this file on its own: the archives it writes are valid for GNU tar.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { default: t } = await import('tap');
  t.test('fixture writes archives GNU tar reads', async (t) => {
    const dir = tempDir(t);
    const { path, layout } = buildImage(dir, 'a.tar', [{ entries: [{ path: 'x/', type: 'dir' }, { path: 'x/f', data: 'hi' }, { path: 'l', type: 'symlink', linkpath: 'x/f' }, { path: 'p'.repeat(120), data: 'long' }] }]);
    const list = execFileSync('tar', ['-tf', path], { encoding: 'utf8' });
    t.match(list, /index\.json/);
    t.match(list, new RegExp(layout.layers[0]!.digest.slice(7)));
    const layer = join(dir, 'layer.tgz');
    writeFileSync(layer, readBlob(layout.files, layout.layers[0]!.digest));
    t.match(execFileSync('tar', ['-tzf', layer], { encoding: 'utf8' }), /p{120}/);
  });
}

function readBlob(files: { path: string; data: Buffer }[], digest: string): Buffer {
  return files.find((f) => f.path === blobPath(digest))!.data;
}
