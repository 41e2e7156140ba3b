/**
 * zstd decompression for layer blobs. Node 20's zlib has no zstd, so the Debian `zstd` binary
 * does it: `zstd -dc` reads the compressed stream on stdin and writes the tar stream on stdout.
 * The result is a Duplex (write compressed bytes, read decompressed ones) with backpressure both
 * ways: a write waits while the pipe to zstd is full, and stdout is paused while the reader is.
 *
 * Hostile input: `--memory=` bounds the window the decoder may allocate, so a frame asking for a
 * bigger one is refused (INVALID_IMAGE) instead of costing the device that memory; the output
 * size is the caller's to bound (maxUnpackedBytes). destroy() (an abort) kills the child.
 *
 * This is a streaming child, which exec/run() (captured output) is not made for; it keeps that
 * door's contract otherwise: an argument array, never a shell, a missing program is UNAVAILABLE.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { Duplex } from 'node:stream';
import { SmError } from '../errors.js';

/** A zstd frame starts with 28 b5 2f fd. */
export const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd] as const;
/** Window memory the decoder may use (zstd's own default limit is 128 MiB too). */
export const ZSTD_MEMORY_LIMIT = 128 * 1024 * 1024;

/** Whether a buffer starts like a zstd stream: a zstd frame, or a skippable frame (5X 2a 4d 18). */
export function isZstdMagic(head: Buffer): boolean {
  if (head.length < 4) return false;
  if (head[0] === ZSTD_MAGIC[0] && head[1] === ZSTD_MAGIC[1] && head[2] === ZSTD_MAGIC[2] && head[3] === ZSTD_MAGIC[3]) return true;
  return (head[0]! & 0xf0) === 0x50 && head[1] === 0x2a && head[2] === 0x4d && head[3] === 0x18;
}

export interface ZstdOptions {
  /** Names the stream in errors, e.g. `layer sha256:…`. */
  what: string;
  /** Path or name of the zstd program (default `zstd`, looked up in PATH). */
  program?: string;
  /** Window memory limit in bytes (default ZSTD_MEMORY_LIMIT). */
  memoryLimitBytes?: number;
  /** Added to the details of the errors. */
  details?: Record<string, unknown>;
}

/**
 * Maps how `zstd -d` ended to an error (null: it succeeded). Pure, for the tests: `stderr` is
 * what the program wrote, e.g. "zstd: /*stdin*\: Frame requires too much memory for decoding".
 */
export function zstdExitError(code: number | null, signal: string | null, stderr: string, o: { what: string; program: string; memoryLimitBytes: number; details?: Record<string, unknown> }): SmError | null {
  if (code === 0) return null;
  const line = stderr
    .split('\n')
    .map((l) => l.replace(/^(zstd: )?(\/\*stdin\*\\ ?: )?/, '').trim())
    .filter((l) => l !== '' && !l.startsWith('Use '))
    .join('; ')
    .slice(0, 500);
  const details = { ...(o.details ?? {}), program: o.program, exitCode: code, signal, stderr: stderr.trim().slice(0, 4000) };
  if (signal !== null) return new SmError('INTERNAL', `${o.program} (decompressing ${o.what}) was killed by ${signal}`, details);
  if (/too much memory|window ?size|windowLog/i.test(stderr)) {
    return new SmError('INVALID_IMAGE', `${o.what}: zstd frame needs a window larger than the ${o.memoryLimitBytes}-byte limit (${line})`, { ...details, limit: 'zstdMemory' });
  }
  return new SmError('INVALID_IMAGE', `${o.what}: zstd stream is damaged or truncated (${line || `exit code ${String(code)}`})`, details);
}

class ZstdDecompressor extends Duplex {
  private readonly child: ChildProcess;
  private stderr = '';
  private waiting: ((err?: Error | null) => void) | null = null;
  private readonly release = () => {
    const cb = this.waiting;
    this.waiting = null;
    this.child.stdin!.off('drain', this.release);
    cb?.();
  };

  constructor(o: Required<Omit<ZstdOptions, 'details'>> & { details?: Record<string, unknown> }) {
    super({ writableHighWaterMark: 1 << 20, readableHighWaterMark: 1 << 20 });
    const memKiB = Math.max(1, Math.floor(o.memoryLimitBytes / 1024));
    const child = spawn(o.program, ['-d', '-c', '-q', '--no-progress', `--memory=${memKiB}KB`], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    child.on('error', (err: NodeJS.ErrnoException) => {
      if (this.destroyed) return;
      const details = { ...(o.details ?? {}), program: o.program, errno: err.code ?? null };
      if (err.code === 'ENOENT') {
        this.destroy(new SmError('UNAVAILABLE', `${o.program}: program not found; zstd-compressed layers need it (install the Debian package "zstd")`, details, { cause: err }));
      } else {
        this.destroy(new SmError('INTERNAL', `${o.program} could not be started: ${err.message}`, details, { cause: err }));
      }
    });
    // EPIPE when zstd quits early (damaged input): its exit status tells why, in 'close'.
    child.stdin!.on('error', this.release);
    child.stdin!.on('close', this.release);
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      if (this.stderr.length < 16_384) this.stderr += s;
    });
    child.stdout!.on('data', (c: Buffer) => {
      if (!this.push(c)) child.stdout!.pause();
    });
    child.on('close', (code, signal) => {
      if (this.destroyed) return;
      const err = zstdExitError(code, signal, this.stderr, o);
      if (err) this.destroy(err);
      else this.push(null);
    });
  }

  override _read(): void {
    this.child.stdout!.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    const stdin = this.child.stdin!;
    if (stdin.destroyed || !stdin.writable) return cb();
    if (stdin.write(chunk)) return cb();
    // Full pipe: the next write waits for it to drain, or for the child to go (its exit status
    // then tells what happened, in 'close').
    this.waiting = cb;
    stdin.once('drain', this.release);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.child.stdin!.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const c = this.child;
    if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) c.kill('SIGKILL');
    c.stdout!.destroy();
    c.stdin!.destroy();
    cb(err);
  }
}

/** A Duplex decompressing zstd through the `zstd` program. Errors are SmErrors (see above). */
export function createZstdDecompressor(opts: ZstdOptions): Duplex {
  return new ZstdDecompressor({
    what: opts.what,
    program: opts.program ?? 'zstd',
    memoryLimitBytes: opts.memoryLimitBytes ?? ZSTD_MEMORY_LIMIT,
    ...(opts.details ? { details: opts.details } : {}),
  });
}
