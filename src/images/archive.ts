/**
 * Streaming walk over the outer archive (tar or tar+gzip, detected by magic bytes): one pass,
 * never the whole archive in memory, with the archive-size and entry-count caps applied.
 */
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { createGunzip } from 'node:zlib';
import { Parser, type ReadEntry } from 'tar';
import { SmError } from '../errors.js';
import { invalid } from './documents.js';
import { normalizeEntryPath } from './paths.js';
import type { ImageLimits } from './types.js';

export const GZIP_MAGIC = [0x1f, 0x8b] as const;
const READ_CHUNK = 1 << 20;

/** Whether a file starts with the gzip magic bytes. */
export async function isGzipFile(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(2);
    const { bytesRead } = await fh.read(buf, 0, 2, 0);
    return bytesRead === 2 && buf[0] === GZIP_MAGIC[0] && buf[1] === GZIP_MAGIC[1];
  } finally {
    await fh.close();
  }
}

/** Stats the archive and applies maxArchiveBytes to its size. */
export async function checkArchiveFile(path: string, limits: ImageLimits): Promise<number> {
  let size: number;
  try {
    const st = await stat(path);
    if (!st.isFile()) throw invalid(`image archive ${path} is not a regular file`, { archive: path });
    size = st.size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new SmError('NOT_FOUND', `image archive ${path} not found`, { archive: path });
    throw err;
  }
  if (size > limits.maxArchiveBytes) {
    throw invalid(`image archive is ${size} bytes, over the cap maxArchiveBytes=${limits.maxArchiveBytes}`, { archive: path, limit: 'maxArchiveBytes' });
  }
  return size;
}

/** Maps an error of tar's Parser (strict mode) to an INVALID_IMAGE naming the problem. */
export function tarError(err: unknown, where: string): SmError {
  if (err instanceof SmError) return err;
  const e = err as Error & { tarCode?: string };
  const msg = (e?.message ?? String(err)).replace(/^TAR_[A-Z_]+: /, '');
  return new SmError('INVALID_IMAGE', `${where} is not a valid tar archive: ${msg}`, { tarCode: e?.tarCode ?? null }, { cause: err });
}

export interface OuterEntry {
  /** Normalised path ('./blobs/x' → 'blobs/x'). */
  path: string;
  type: string;
  size: number;
}

export interface ArchiveWalk {
  /** Resolves when the whole archive was read and every job registered with `track` settled. */
  done: Promise<void>;
  /** Stops the walk with an error (first error wins). */
  abort(err: unknown): void;
  /** Makes `done` wait for a piece of work started from an entry (e.g. a layer extraction). */
  track(p: Promise<unknown>): void;
  /** Aborted with the failure when the walk fails: tracked jobs must stop and settle. */
  readonly signal: AbortSignal;
  readonly failed: boolean;
}

/**
 * Walks the entries of the outer archive. `onEntry` runs synchronously for each entry and must
 * consume it (attach a 'data' listener or call resume()); a throw aborts the walk.
 */
export function walkArchive(
  archivePath: string,
  gzip: boolean,
  limits: ImageLimits,
  onEntry: (info: OuterEntry, entry: ReadEntry, walk: ArchiveWalk) => void,
): ArchiveWalk {
  let failure: unknown = null;
  const ac = new AbortController();
  let settle!: { resolve: () => void; reject: (e: unknown) => void };
  const finished = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
  const jobs: Promise<unknown>[] = [];
  const src = createReadStream(archivePath, { highWaterMark: READ_CHUNK });
  const gunzip = gzip ? createGunzip({ chunkSize: 256 * 1024 }) : null;
  const parser = new Parser({ strict: true, zstd: false, brotli: false });
  let streamBytes = 0;
  let entries = 0;

  const walk: ArchiveWalk = {
    // Settles only once every tracked job settled too, so that a caller may clean up after it.
    done: finished
      .catch(() => {}) // not lost: `failure` is thrown below, once every tracked job settled
      .then(async () => {
        for (let n = -1; n < jobs.length; ) {
          n = jobs.length;
          await Promise.allSettled(jobs);
        }
        if (failure) throw failure;
      }),
    abort(err: unknown) {
      if (failure) return;
      failure = err ?? new Error('aborted');
      src.destroy();
      gunzip?.destroy();
      ac.abort(failure);
      settle.reject(failure);
    },
    track(p: Promise<unknown>) {
      jobs.push(p.catch((err) => walk.abort(err)));
    },
    signal: ac.signal,
    get failed() {
      return failure !== null;
    },
  };

  const feed = (chunk: Buffer, pause: () => void, resume: () => void) => {
    if (failure) return;
    if (streamBytes === 0 && chunk.length >= 2 && chunk[0] === GZIP_MAGIC[0] && chunk[1] === GZIP_MAGIC[1]) {
      return walk.abort(invalid('image archive is compressed twice (gzip inside gzip)'));
    }
    streamBytes += chunk.length;
    if (streamBytes > limits.maxArchiveBytes) {
      return walk.abort(invalid(`image archive expands to more than maxArchiveBytes=${limits.maxArchiveBytes} bytes`, { limit: 'maxArchiveBytes' }));
    }
    try {
      if (!parser.write(chunk)) {
        pause();
        parser.once('drain', resume);
      }
    } catch (err) {
      walk.abort(err);
    }
  };

  parser.on('entry', (entry: ReadEntry) => {
    if (failure) return void entry.resume();
    entries++;
    if (entries > limits.maxEntries) {
      entry.resume();
      return walk.abort(invalid(`image archive has more than maxEntries=${limits.maxEntries} entries`, { limit: 'maxEntries' }));
    }
    const n = normalizeEntryPath(entry.path);
    const path = n.ok ? n.path : entry.path;
    try {
      onEntry({ path, type: entry.type, size: entry.size }, entry, walk);
    } catch (err) {
      entry.resume();
      walk.abort(err);
    }
  });
  parser.on('ignoredEntry', (entry: ReadEntry) => entry.resume());
  parser.on('warn', (_code: string, message: string, data: unknown) => walk.abort(tarError(Object.assign(new Error(message), data), 'image archive')));
  parser.on('error', (err: unknown) => walk.abort(tarError(err, 'image archive')));
  parser.on('end', () => {
    if (!failure) settle.resolve();
  });
  src.on('error', (err) => walk.abort(err));

  if (gunzip) {
    src.pipe(gunzip);
    gunzip.on('data', (c: Buffer) =>
      feed(
        c,
        () => gunzip.pause(),
        () => gunzip.resume(),
      ),
    );
    gunzip.on('end', () => failure || parser.end());
    gunzip.on('error', (err) => walk.abort(invalid(`image archive: gzip stream is damaged (${err.message})`)));
  } else {
    src.on('data', (c) =>
      feed(
        c as Buffer,
        () => src.pause(),
        () => src.resume(),
      ),
    );
    src.on('end', () => failure || parser.end());
  }
  return walk;
}
