/**
 * extractLayers: the second streaming pass. Each wanted layer blob goes through sha256 + size
 * check → (gunzip | zstd) → tar Parser → LayerUnpacker into a staging directory beside its final
 * directory. The blobs come from the image's BlobSource: in one pass over an archive, or from
 * the files of a blob directory (a few at a time). Only when every wanted layer verified and
 * unpacked are the staging directories renamed into place; on any failure all of them are
 * removed.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, constants, mkdirSync, type ReadStream } from 'node:fs';
import { lstat, mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Duplex } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { Parser, type ReadEntry } from 'tar';
import { SmError } from '../errors.js';
import { fsyncDir } from '../fs/atomic.js';
import { checkArchiveFile, GZIP_MAGIC, isGzipFile, tarError, walkArchive } from './archive.js';
import { invalid } from './documents.js';
import { sha256Hex } from './paths.js';
import { LayerUnpacker, type Budget } from './unpack.js';
import { resolveLimits, type BlobSource, type ExtractedLayer, type ExtractOptions, type ExtractResult, type ImageInfo, type ImageLimits, type LayerDescriptor } from './types.js';
import { createZstdDecompressor, isZstdMagic } from './zstd.js';

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

/** What a blob extraction needs from whoever drives it (the archive walk, or the dir pool). */
interface Control {
  abort(err: unknown): void;
  readonly signal: AbortSignal;
  readonly failed: boolean;
}

/** A readable of one blob's bytes: a tar entry of the archive, or a file stream. */
type BlobStream = ReadEntry | ReadStream;

/** Blobs read at once from a `dir` source. */
const DIR_CONCURRENCY = 2;
const READ_CHUNK = 1 << 20;

function newStaging(t: Todo): void {
  t.staging = join(dirname(t.final), `.${basename(t.final)}.staging-${randomBytes(6).toString('hex')}`);
  mkdirSync(t.staging, 0o755);
  chmodSync(t.staging, 0o755); // the layer root, whatever the umask
}

export async function extractLayers(image: ImageInfo, opts: ExtractOptions): Promise<ExtractResult> {
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

  try {
    const src = image.blobs;
    if (src.kind === 'archive') await fromArchive(src, todo, limits, budget, progress);
    else await fromDir(src.root, todo, budget, progress);
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

/** One streaming pass over the archive; each wanted blob is extracted as its entry passes. */
async function fromArchive(src: Extract<BlobSource, { kind: 'archive' }>, todo: Map<string, Todo>, limits: ImageLimits, budget: Budget, progress: (n: number) => void): Promise<void> {
  await checkArchiveFile(src.path, limits);
  const gzip = await isGzipFile(src.path);
  for (const t of todo.values()) await mkdir(dirname(t.final), { recursive: true });
  // Entry path → hex of the wanted blob it holds.
  const byPath = new Map<string, string>();
  for (const t of todo.values()) byPath.set(src.entries?.get(t.desc.digest) ?? `blobs/sha256/${t.hex}`, t.hex);
  const walk = walkArchive(src.path, gzip, limits, (info, entry, w) => {
    const hex = byPath.get(info.path);
    const t = hex === undefined ? undefined : todo.get(hex);
    if (!t || t.staging !== null || !(info.type === 'File' || info.type === 'OldFile' || info.type === 'ContiguousFile')) return void entry.resume();
    newStaging(t);
    w.track(extractBlob(t, entry, w, budget, progress));
  });
  await walk.done;
}

/** Blob files `<root>/<hex>`, a few at a time; the first failure stops them all. */
async function fromDir(root: string, todo: Map<string, Todo>, budget: Budget, progress: (n: number) => void): Promise<void> {
  const ac = new AbortController();
  let failure: unknown = null;
  const ctl: Control = {
    abort(err: unknown) {
      if (failure) return;
      failure = err ?? new Error('aborted');
      ac.abort(failure);
    },
    signal: ac.signal,
    get failed() {
      return failure !== null;
    },
  };
  const queue = [...todo.values()];
  const one = async (t: Todo) => {
    const file = join(root, t.hex);
    let fh: FileHandle;
    try {
      fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ELOOP') throw invalid(`missing blob ${t.desc.digest} (layer): no file ${file}`, { digest: t.desc.digest });
      throw err;
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw invalid(`blob ${t.desc.digest}: ${file} is not a regular file`, { digest: t.desc.digest });
      if (st.size !== t.desc.size) throw invalid(`blob ${t.desc.digest} size mismatch: descriptor says ${t.desc.size} bytes, ${file} holds ${st.size}`, { digest: t.desc.digest });
      if (ctl.failed) return;
      await mkdir(dirname(t.final), { recursive: true });
      newStaging(t);
      const stream = fh.createReadStream({ highWaterMark: READ_CHUNK, autoClose: false });
      stream.on('error', (err) => ctl.abort(err));
      const onAbort = () => stream.destroy();
      ac.signal.addEventListener('abort', onAbort, { once: true });
      try {
        await extractBlob(t, stream, ctl, budget, progress);
      } finally {
        ac.signal.removeEventListener('abort', onAbort);
        stream.destroy();
      }
    } finally {
      await fh.close();
    }
  };
  const worker = async () => {
    for (let t = queue.shift(); t && !ctl.failed; t = queue.shift()) {
      await one(t).catch((err) => ctl.abort(err));
    }
  };
  await Promise.all(Array.from({ length: Math.min(DIR_CONCURRENCY, queue.length) }, worker));
  if (failure) throw failure;
}

const COMPRESSION_NAME = { none: 'uncompressed', gzip: 'gzip', zstd: 'zstd' } as const;

/** What a blob's first bytes say it is (null: neither gzip nor zstd, e.g. a tar header). */
function sniff(head: Buffer): 'gzip' | 'zstd' | null {
  if (head.length >= 2 && head[0] === GZIP_MAGIC[0] && head[1] === GZIP_MAGIC[1]) return 'gzip';
  return isZstdMagic(head) ? 'zstd' : null;
}

/**
 * Holds back the first bytes of a stream until `n` are there (or it ends), so that magic bytes
 * split across chunks are still seen; `check` may throw to refuse the stream.
 */
class HeadCheck {
  private parts: Buffer[] = [];
  private length = 0;
  private done = false;

  constructor(
    private readonly n: number,
    private readonly check: (head: Buffer) => void,
  ) {}

  /** Chunks to pass on now (none while the head is incomplete). */
  push(c: Buffer): Buffer[] {
    if (this.done) return [c];
    this.parts.push(c);
    this.length += c.length;
    return this.length >= this.n ? this.flush() : [];
  }

  /** At the end of the stream: whatever was held back. */
  flush(): Buffer[] {
    if (this.done) return [];
    this.done = true;
    const all = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
    this.parts = [];
    if (all.length > 0) this.check(all);
    return all.length > 0 ? [all] : [];
  }
}

/**
 * One layer blob: hash + size → (gunzip | zstd) → tar Parser → LayerUnpacker. Settles on abort
 * too. Magic bytes are checked against the media type on both sides of the decompressor: a blob
 * that is not what its media type says, or is compressed twice, is INVALID_IMAGE.
 */
function extractBlob(t: Todo, blob: BlobStream, walk: Control, budget: Budget, progress: (n: number) => void): Promise<void> {
  const { desc } = t;
  // Both kinds emit 'data' with Buffers and 'end', and pause and resume; their typings differ.
  const entry = blob as unknown as { on(ev: string, fn: (c: Buffer) => void): unknown; pause(): unknown; resume(): unknown };
  const where = `layer ${desc.digest}`;
  const fail = (err: unknown) => walk.abort(err);
  const unpacker = new LayerUnpacker(t.staging!, budget, fail);
  const hash = createHash('sha256');
  const inner = new Parser({ strict: true, zstd: false, brotli: false });
  const dec: Duplex | null =
    desc.compression === 'gzip'
      ? createGunzip({ chunkSize: 256 * 1024 })
      : desc.compression === 'zstd'
        ? createZstdDecompressor({ what: where, details: { digest: desc.digest } })
        : null;
  let blobBytes = 0;
  let sawEntry = false;
  let allZero = true;

  const rawHead = new HeadCheck(4, (head) => {
    const is = sniff(head);
    if (desc.compression === 'zstd' && is !== 'zstd') throw invalid(`${where}: media type ${desc.mediaType} says zstd but the blob is ${is ?? 'not zstd'}`, { digest: desc.digest });
    if (desc.compression !== 'zstd' && is === 'zstd') throw invalid(`${where}: media type ${desc.mediaType} says ${COMPRESSION_NAME[desc.compression]} but the blob is zstd`, { digest: desc.digest });
  });
  const tarHead = new HeadCheck(4, (head) => {
    const is = sniff(head);
    if (is === null) return;
    if (desc.compression === 'none') throw invalid(`${where}: media type ${desc.mediaType} says uncompressed but the blob is ${is}`, { digest: desc.digest });
    throw invalid(`${where}: compressed twice (${is} inside ${desc.compression})`, { digest: desc.digest });
  });

  let onAbort!: () => void;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => {
      dec?.destroy();
      unpacker.abort();
      entry.resume();
      reject(walk.signal.reason);
    };
    if (walk.signal.aborted) onAbort();
    else walk.signal.addEventListener('abort', onAbort, { once: true });
  });
  aborted.catch(() => {}); // only raced against the entry below, where its reason is thrown; this marks it handled

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

  const writeInner = (c: Buffer) => {
    budget.streamBytes += c.length;
    if (budget.streamBytes > budget.limits.maxUnpackedBytes) {
      return fail(invalid(`unpacked size exceeds maxUnpackedBytes=${budget.limits.maxUnpackedBytes} (${where})`, { digest: desc.digest, limit: 'maxUnpackedBytes' }));
    }
    if (allZero && !sawEntry) allZero = isAllZero(c);
    inner.write(c);
  };
  /** Decompressed (tar) bytes → tar Parser; `last` at the end of the stream. */
  const toInner = (c: Buffer | null) => {
    if (walk.failed) return;
    try {
      for (const part of c ? tarHead.push(c) : tarHead.flush()) {
        writeInner(part);
        if (walk.failed) return;
      }
      if (!c) inner.end();
    } catch (err) {
      fail(err instanceof SmError ? err : tarError(err, where));
    }
  };
  /** Raw (as stored) bytes → decompressor or tar Parser. */
  const toDecoder = (parts: Buffer[]) => {
    for (const c of parts) {
      if (walk.failed) return;
      if (!dec) toInner(c);
      else if (!dec.write(c)) {
        entry.pause();
        dec.once('drain', () => entry.resume());
      }
    }
  };

  const blobDone = new Promise<void>((resolve) => {
    if (dec) {
      dec.on('data', (c: Buffer) => toInner(c));
      dec.on('end', () => toInner(null));
      dec.on('error', (err: Error) =>
        fail(err instanceof SmError ? err : invalid(`${where}: ${desc.compression} stream is damaged or truncated (${err.message})`, { digest: desc.digest })),
      );
    }
    entry.on('data', (c: Buffer) => {
      if (walk.failed) return;
      hash.update(c);
      blobBytes += c.length;
      progress(c.length);
      if (blobBytes > desc.size) {
        return fail(invalid(`blob ${desc.digest} size mismatch: descriptor says ${desc.size} bytes, the blob holds more`, { digest: desc.digest }));
      }
      try {
        toDecoder(rawHead.push(c));
      } catch (err) {
        fail(err);
      }
    });
    entry.on('end', () => {
      if (walk.failed) return;
      if (blobBytes !== desc.size) {
        return fail(invalid(`blob ${desc.digest} size mismatch: descriptor says ${desc.size} bytes, archive holds ${blobBytes}`, { digest: desc.digest }));
      }
      const actual = hash.digest('hex');
      if (actual !== t.hex) return fail(invalid(`blob ${desc.digest} digest mismatch: content hashes to sha256:${actual}`, { digest: desc.digest }));
      try {
        toDecoder(rawHead.flush());
      } catch (err) {
        return fail(err);
      }
      if (dec) dec.end();
      else toInner(null);
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
