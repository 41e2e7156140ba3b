/**
 * One blob to a file, the way an edge link needs it (SPEC 11):
 *  - every byte goes through sha256 and the size check as it arrives; the file is renamed to its
 *    final name only once the whole blob verified, so a final name always means a whole blob;
 *  - a dropped or stalled transfer resumes with `Range: bytes=<what we have>-`, also after a
 *    restart of smd (the `.partial` file is hashed again first), never from zero because of a cut;
 *  - attempts without progress back off exponentially with full jitter; one that made progress
 *    resets the count, so a link that keeps dropping still finishes;
 *  - an optional bandwidth cap shared by all downloads.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { SmError } from '../../errors.js';
import { fsyncDir } from '../../fs/atomic.js';
import { dirname } from 'node:path';
import { classify, discard, eachChunk, header, TransientError, type Response } from './http.js';

export interface BlobRequest {
  /** `sha256:<hex>` the bytes must hash to. */
  digest: string;
  /** Expected size, when known (registries always; URLs when given). */
  size: number | null;
  /** Final path; `<path>.partial` holds the bytes so far. */
  path: string;
  /** Sends the GET (with auth, redirects); `range` is the first byte wanted. */
  get(range: number, signal: AbortSignal): Promise<Response>;
  /** What the blob is, for messages. */
  what: string;
}

export interface DownloadPolicy {
  /** Attempts in a row without a new byte before giving up. */
  retries: number;
  backoff: { initialMs: number; maxMs: number };
  /** Cap of a blob without a known size. */
  maxBytes: number;
  rate: RateLimiter | null;
}

/** The wait before retry number `attempt` (1, 2, …): exponential with full jitter. */
export function backoffDelay(attempt: number, backoff: DownloadPolicy['backoff']): number {
  return Math.random() * Math.min(backoff.maxMs, backoff.initialMs * 2 ** (attempt - 1));
}

/** Bytes of the file already there (a whole blob, or a partial). */
export async function bytesOnDisk(path: string): Promise<{ complete: boolean; bytes: number }> {
  const size = async (p: string) => {
    try {
      return (await stat(p)).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  };
  const whole = await size(path);
  if (whole !== null) return { complete: true, bytes: whole };
  return { complete: false, bytes: (await size(`${path}.partial`)) ?? 0 };
}

/**
 * Downloads `req` to `req.path` unless it is there. `onBytes` gets every new byte count
 * (including what a partial already held, once). Returns the bytes fetched over the network.
 */
export async function downloadBlob(req: BlobRequest, policy: DownloadPolicy, onBytes: (n: number) => void, signal: AbortSignal): Promise<number> {
  const have = await bytesOnDisk(req.path);
  if (have.complete) {
    onBytes(have.bytes);
    return 0;
  }
  const partial = `${req.path}.partial`;
  let hash = createHash('sha256');
  let offset = await rehash(partial, hash);
  if (req.size !== null && offset > req.size) {
    await rm(partial, { force: true });
    hash = createHash('sha256');
    offset = 0;
  }
  onBytes(offset);
  const fh = await open(partial, 'a');
  const dropPartial = async (err: Error): Promise<never> => {
    await rm(partial, { force: true });
    throw err;
  };
  let fetched = 0;
  try {
    let failures = 0;
    for (;;) {
      if (signal.aborted) throw cancelled(req, signal);
      if (req.size !== null && offset === req.size) break;
      let moved = 0;
      try {
        const r = await req.get(offset, signal);
        if (r.status === 416 && req.size === null && offset > 0) {
          // We hold everything the server has: the digest decides.
          await discard(r.body);
          break;
        }
        if (r.status === 200 && offset > 0) {
          // The server ignored Range: start over with this response.
          await fh.truncate(0);
          hash = createHash('sha256');
          onBytes(-offset);
          offset = 0;
        } else if (r.status === 206) {
          const start = /^bytes (\d+)-/.exec(header(r.headers, 'content-range') ?? '');
          if (!start || Number(start[1]) !== offset) {
            await discard(r.body);
            throw new TransientError(`${req.what}: the server answered Range ${offset}- with ${header(r.headers, 'content-range') ?? 'no Content-Range'}`);
          }
        } else if (r.status !== 200) {
          await discard(r.body);
          throw statusError(req, r.status);
        }
        // Chunks are hashed as they arrive and written in batches of WRITE_BATCH_BYTES rather than
        // one write (a round trip to the thread pool) per chunk, and whatever is pending once the
        // link has been quiet for IDLE_FLUSH_MS: what a crash of smd can lose and fetch again is
        // at most one batch, and a stalled transfer has its bytes on disk.
        const batch = new WriteBatcher(fh);
        try {
          await eachChunk(r.body, (chunk) => {
            if (req.size !== null && offset + chunk.length > req.size) {
              return dropPartial(new SmError('INVALID_IMAGE', `${req.what}: the server sent more than the ${req.size} bytes of ${req.digest}`, { digest: req.digest }));
            }
            if (offset + chunk.length > policy.maxBytes) {
              return dropPartial(new SmError('INVALID_IMAGE', `${req.what} is over the ${policy.maxBytes}-byte cap (images.maxArchiveBytes)`, { digest: req.digest, limit: 'maxArchiveBytes' }));
            }
            const accept = () => {
              hash.update(chunk);
              offset += chunk.length;
              moved += chunk.length;
              fetched += chunk.length;
              onBytes(chunk.length);
              return batch.add(chunk);
            };
            // Most chunks are taken synchronously: no promise, no pause of the body.
            return policy.rate ? policy.rate.take(chunk.length, signal).then(accept) : accept();
          });
        } finally {
          // Also when the body broke off: what was hashed is on disk, so a resume starts at `offset`.
          await batch.close();
        }
        if (req.size === null) break; // the server said it is done; the digest decides
        if (offset < req.size) throw new TransientError(`${req.what}: the connection ended at byte ${offset} of ${req.size}`);
      } catch (caught) {
        // A body that breaks off (reset, stall) throws from the loop above: a link failure too.
        const err = classify(caught, req.what);
        if (!(err instanceof TransientError)) throw err;
        if (signal.aborted) throw cancelled(req, signal);
        failures = moved > 0 ? 1 : failures + 1;
        if (failures > policy.retries) {
          throw new SmError('UNAVAILABLE', `${req.what}: gave up after ${policy.retries} attempts without progress at byte ${offset}: ${err.message}`, { digest: req.digest, bytes: offset }, { cause: err });
        }
        // An abort ends the wait early; the loop's first line then throws `cancelled`.
        await sleep(backoffDelay(failures, policy.backoff), undefined, { signal }).catch(() => undefined);
      }
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  const actual = `sha256:${hash.digest('hex')}`;
  if (actual !== req.digest) {
    await rm(partial, { force: true });
    throw new SmError('INVALID_IMAGE', `${req.what}: digest mismatch: the bytes received hash to ${actual}, expected ${req.digest}`, { digest: req.digest, actual });
  }
  await rename(partial, req.path);
  await fsyncDir(dirname(req.path));
  return fetched;
}

/** Hashes what a partial file already holds; returns its length. */
async function rehash(path: string, hash: Hash): Promise<number> {
  let n = 0;
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
      hash.update(chunk);
      n += chunk.length;
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  return n;
}

const WRITE_BATCH_BYTES = 1 << 20;
const IDLE_FLUSH_MS = 200;

/**
 * Appends chunks to a file in batches, with one writev per batch (no copy into one buffer).
 * One batch is written while the next one fills; writes run one after another, in order.
 */
class WriteBatcher {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private writing: Promise<void> = Promise.resolve();
  private idle: NodeJS.Timeout | undefined;

  constructor(private readonly fh: FileHandle) {}

  /** A promise only when the caller must wait (the batch before this one is still being written). */
  add(chunk: Buffer): Promise<void> | undefined {
    clearTimeout(this.idle);
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes >= WRITE_BATCH_BYTES) return this.flush();
    this.idle = setTimeout(() => void this.flush(), IDLE_FLUSH_MS);
    return undefined;
  }

  /** Writes what is pending and waits for every write so far. */
  async close(): Promise<void> {
    clearTimeout(this.idle);
    void this.flush();
    return this.writing;
  }

  /** Queues the pending chunks; resolves once the writes queued before them are done. */
  private flush(): Promise<void> {
    const before = this.writing;
    if (this.pendingBytes > 0) {
      const batch = this.pending;
      this.pending = [];
      this.pendingBytes = 0;
      this.writing = before.then(() => writeAll(this.fh, batch));
      // A failed write is seen by the next add or by close; it must not count as unhandled meanwhile.
      this.writing.catch(() => undefined);
    }
    return before;
  }
}

async function writeAll(fh: FileHandle, chunks: Buffer[]): Promise<void> {
  let { bytesWritten } = await fh.writev(chunks);
  for (const chunk of chunks) {
    // A short write (rare: a signal, a full disk about to fail) continues where it stopped.
    if (bytesWritten >= chunk.length) {
      bytesWritten -= chunk.length;
      continue;
    }
    let off = bytesWritten;
    bytesWritten = 0;
    while (off < chunk.length) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
  }
}

function statusError(req: BlobRequest, status: number): Error {
  if (status === 404) return new SmError('NOT_FOUND', `${req.what}: ${req.digest} not found on the server (HTTP 404)`, { digest: req.digest, status });
  if (status === 401 || status === 403) return new SmError('FORBIDDEN', `${req.what}: the server refused access (HTTP ${status}); check the credentials under "registries"`, { digest: req.digest, status });
  if (status === 408 || status === 429 || status >= 500) return new TransientError(`${req.what}: HTTP ${status}`);
  return new SmError('UNAVAILABLE', `${req.what}: unexpected HTTP ${status}`, { digest: req.digest, status });
}

function cancelled(req: BlobRequest, signal: AbortSignal): SmError {
  return new SmError('UNAVAILABLE', `${req.what}: download cancelled`, { digest: req.digest }, { cause: signal.reason });
}

/** A token bucket shared by all downloads: at most `bytesPerSec`, bursts of one second. */
export class RateLimiter {
  private tokens: number;
  private last = Date.now();

  constructor(private readonly bytesPerSec: number) {
    this.tokens = bytesPerSec;
  }

  async take(n: number, signal: AbortSignal): Promise<void> {
    for (;;) {
      const now = Date.now();
      this.tokens = Math.min(this.bytesPerSec, this.tokens + ((now - this.last) / 1000) * this.bytesPerSec);
      this.last = now;
      if (this.tokens >= n || (this.tokens >= this.bytesPerSec && n > this.bytesPerSec)) {
        this.tokens -= n;
        return;
      }
      await sleep(Math.max(1, ((Math.min(n, this.bytesPerSec) - this.tokens) / this.bytesPerSec) * 1000), undefined, { signal });
    }
  }
}
