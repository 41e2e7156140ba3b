/**
 * extractLayers: the second streaming pass. In one pass over the archive, each wanted layer blob
 * goes through sha256 + size check → (gunzip) → tar Parser → LayerUnpacker into a staging
 * directory beside its final directory. Only when every wanted layer verified and unpacked are
 * the staging directories renamed into place; on any failure all of them are removed.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync } from 'node:fs';
import { lstat, mkdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { createGunzip, type Gunzip } from 'node:zlib';
import { Parser, type ReadEntry } from 'tar';
import { SmError } from '../errors.js';
import { fsyncDir } from '../fs/atomic.js';
import { checkArchiveFile, GZIP_MAGIC, invalid, isGzipFile, tarError, walkArchive, type ArchiveWalk } from './archive.js';
import { sha256Hex } from './paths.js';
import { LayerUnpacker, type Budget } from './unpack.js';
import { resolveLimits, type ExtractedLayer, type ExtractOptions, type ExtractResult, type ImageInfo, type LayerDescriptor } from './types.js';

interface Todo {
  desc: LayerDescriptor;
  hex: string;
  final: string;
  staging: string | null;
  result: ExtractedLayer | null;
}

const PROGRESS_STEP = 1 << 20;

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

function isAllZero(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

export async function extractLayers(archivePath: string, image: ImageInfo, opts: ExtractOptions): Promise<ExtractResult> {
  const limits = resolveLimits(opts.limits);
  const byDigest = new Map(image.layers.map((l) => [l.digest, l]));
  const present: string[] = [];
  const todo = new Map<string, Todo>();
  for (const digest of opts.wanted) {
    const desc = byDigest.get(digest);
    if (!desc) throw new SmError('NOT_FOUND', `layer ${digest} is not a layer of image ${image.manifestDigest}`, { digest });
    const final = opts.destFor(digest);
    if (await exists(final)) {
      present.push(digest);
      continue;
    }
    todo.set(sha256Hex(digest)!, { desc, hex: sha256Hex(digest)!, final, staging: null, result: null });
  }
  if (todo.size === 0) return { extracted: [], present };

  await checkArchiveFile(archivePath, limits);
  const gzip = await isGzipFile(archivePath);
  for (const t of todo.values()) await mkdir(dirname(t.final), { recursive: true });

  const budget: Budget = { limits, entries: 0, fileBytes: 0, streamBytes: 0 };
  const total = [...todo.values()].reduce((s, t) => s + t.desc.size, 0);
  let done = 0;
  let reported = -PROGRESS_STEP;
  const progress = (n: number) => {
    done += n;
    if (opts.onProgress && (done - reported >= PROGRESS_STEP || done === total)) {
      reported = done;
      opts.onProgress(done, total);
    }
  };

  const walk = walkArchive(archivePath, gzip, limits, (info, entry, w) => {
    const m = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(info.path);
    const t = m ? todo.get(m[1]!) : undefined;
    if (!t || t.staging !== null || !(info.type === 'File' || info.type === 'OldFile' || info.type === 'ContiguousFile')) return void entry.resume();
    t.staging = join(dirname(t.final), `.${basename(t.final)}.staging-${randomBytes(6).toString('hex')}`);
    mkdirSync(t.staging, 0o755);
    chmodSync(t.staging, 0o755); // the layer root, whatever the umask
    w.track(extractBlob(t, entry, w, budget, progress));
  });

  try {
    await walk.done;
    for (const t of todo.values()) {
      if (t.staging === null) throw invalid(`missing blob ${t.desc.digest} (layer)`, { digest: t.desc.digest });
    }
  } catch (err) {
    await Promise.all([...todo.values()].map((t) => (t.staging ? rm(t.staging, { recursive: true, force: true }) : undefined)));
    throw err;
  }

  // Everything verified: move into place. A layer that appeared meanwhile (a concurrent
  // install of the same layer) is kept, and our copy dropped.
  const extracted: ExtractedLayer[] = [];
  const parents = new Set<string>();
  for (const t of todo.values()) {
    try {
      await rename(t.staging!, t.final);
      extracted.push(t.result!);
      parents.add(dirname(t.final));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      await rm(t.staging!, { recursive: true, force: true });
      if (code === 'EEXIST' || code === 'ENOTEMPTY') present.push(t.desc.digest);
      else throw err;
    }
  }
  for (const p of parents) await fsyncDir(p);
  return { extracted, present };
}

/** One layer blob: hash + size → (gunzip) → tar Parser → LayerUnpacker. Settles on abort too. */
function extractBlob(t: Todo, entry: ReadEntry, walk: ArchiveWalk, budget: Budget, progress: (n: number) => void): Promise<void> {
  const { desc } = t;
  const where = `layer ${desc.digest}`;
  const fail = (err: unknown) => walk.abort(err);
  const unpacker = new LayerUnpacker(t.staging!, budget, fail);
  const hash = createHash('sha256');
  const inner = new Parser({ strict: true, zstd: false, brotli: false });
  const gz: Gunzip | null = desc.gzip ? createGunzip({ chunkSize: 256 * 1024 }) : null;
  let blobBytes = 0;
  let streamBytes = 0;
  let sawEntry = false;
  let allZero = true;

  let onAbort!: () => void;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => {
      gz?.destroy();
      unpacker.abort();
      entry.resume();
      reject(walk.signal.reason);
    };
    if (walk.signal.aborted) onAbort();
    else walk.signal.addEventListener('abort', onAbort, { once: true });
  });
  aborted.catch(() => {});

  const innerDone = new Promise<void>((resolve) => {
    inner.on('entry', (e: ReadEntry) => {
      sawEntry = true;
      unpacker.onEntry(e);
    });
    inner.on('ignoredEntry', (e: ReadEntry) => unpacker.onIgnored(e));
    const onTarProblem = (err: unknown) => {
      // A layer of only zero blocks (e.g. Docker's empty layer) is a valid, empty layer.
      const e = err as { tarCode?: string; message?: string };
      if (!sawEntry && allZero && e?.tarCode === 'TAR_BAD_ARCHIVE' && /Unrecognized archive format/.test(e.message ?? '')) return;
      fail(tarError(err, where));
    };
    inner.on('warn', (_code: string, message: string, data: unknown) => onTarProblem(Object.assign(new Error(message), data)));
    inner.on('error', onTarProblem);
    inner.on('end', () => resolve());
  });

  const toInner = (c: Buffer) => {
    if (walk.failed) return;
    if (streamBytes === 0 && c.length >= 2 && c[0] === GZIP_MAGIC[0] && c[1] === GZIP_MAGIC[1]) {
      return fail(invalid(`${where}: ${desc.gzip ? 'compressed twice' : `media type ${desc.mediaType} says uncompressed but the blob is gzip`}`, { digest: desc.digest }));
    }
    streamBytes += c.length;
    budget.streamBytes += c.length;
    if (budget.streamBytes > budget.limits.maxUnpackedBytes) {
      return fail(invalid(`unpacked size exceeds maxUnpackedBytes=${budget.limits.maxUnpackedBytes} (${where})`, { digest: desc.digest, limit: 'maxUnpackedBytes' }));
    }
    if (allZero && !sawEntry) allZero = isAllZero(c);
    try {
      inner.write(c);
    } catch (err) {
      fail(tarError(err, where));
    }
  };

  const blobDone = new Promise<void>((resolve) => {
    if (gz) {
      gz.on('data', toInner);
      gz.on('end', () => walk.failed || inner.end());
      gz.on('error', (err) => fail(invalid(`${where}: gzip stream is damaged or truncated (${err.message})`, { digest: desc.digest })));
    }
    entry.on('data', (c: Buffer) => {
      if (walk.failed) return;
      hash.update(c);
      blobBytes += c.length;
      progress(c.length);
      if (gz) {
        if (!gz.write(c)) {
          entry.pause();
          gz.once('drain', () => entry.resume());
        }
      } else toInner(c);
    });
    entry.on('end', () => {
      if (walk.failed) return;
      if (blobBytes !== desc.size) {
        return fail(invalid(`blob ${desc.digest} size mismatch: descriptor says ${desc.size} bytes, archive holds ${blobBytes}`, { digest: desc.digest }));
      }
      const actual = hash.digest('hex');
      if (actual !== t.hex) return fail(invalid(`blob ${desc.digest} digest mismatch: content hashes to sha256:${actual}`, { digest: desc.digest }));
      if (gz) gz.end();
      else inner.end();
      resolve();
    });
  });

  // Settles promptly on abort; once finish() started it is waited for, so that the caller's
  // clean-up never races with it.
  const work = (async () => {
    await Promise.race([Promise.all([blobDone, innerDone]), aborted]);
    if (walk.failed) return;
    await unpacker.finish();
    t.result = { digest: desc.digest, path: t.final, unpackedBytes: unpacker.fileBytes, entries: unpacker.entries };
  })();
  return work.finally(() => walk.signal.removeEventListener('abort', onAbort));
}
