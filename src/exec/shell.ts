import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { SmError } from '../errors.js';
import { run, type RunOptions, type RunResult } from './run.js';

/**
 * A long-lived /bin/sh that starts programs for smd's periodic work (the traffic sample's
 * `iptables-save`), one at a time, with the same contract and errors as run().
 *
 * Why: fork() copies the page tables of the forking process. From the daemon (60–100 MB RSS) a
 * spawn costs 7–15 ms on this machine kind; from a shell of ~1 MB, ~3 ms (measured with
 * `npm run bench -- traffic`, which reports both). Every argument is single-quoted, so the shell
 * interprets nothing; output is framed by a random marker the program cannot predict.
 * Calls with stdin input or their own environment go through run().
 */
export class ShellSession {
  private child: ChildProcess | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  /** A Runner (see net/runner.ts): runs `file args` in the shell, in call order. */
  readonly run = (file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> => {
    if (opts.input !== undefined || opts.env !== undefined || this.closed) return run(file, args, opts);
    const next = this.queue.then(
      () => this.exec(file, args, opts),
      () => this.exec(file, args, opts),
    );
    this.queue = next.catch(() => undefined); // the tail only orders the calls: each caller gets its own error from `next`
    return next;
  };

  /** Ends the shell; later calls use run(). */
  close(): void {
    this.closed = true;
    this.kill();
  }

  private shell(): ChildProcess {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) return this.child;
    // Its own process group, so a timeout kills the program it started as well.
    const child = spawn('/bin/sh', [], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    child.on('error', () => {}); // reported through 'close' to the call in progress
    child.stdin!.on('error', () => {});
    child.unref();
    this.child = child;
    return child;
  }

  private kill(): void {
    const child = this.child;
    this.child = null;
    if (!child || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      child.kill('SIGKILL');
    }
  }

  private exec(file: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const maxBuffer = opts.maxBuffer ?? 64 * 1024 * 1024;
    const child = this.shell();
    const marker = randomBytes(12).toString('hex');
    const outEnd = Buffer.from(`\n${marker} `);
    const errEnd = Buffer.from(`\n${marker}\n`);
    return new Promise<RunResult>((resolve, reject) => {
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let outBytes = 0;
      let tail = Buffer.alloc(0);
      let status: number | null = null;
      let errDone = false;
      const details = () => ({ program: file, args: [...args], exitCode: status, signal: null, stderr: stderrText() });
      const stderrText = () => Buffer.concat(err).toString('utf8').replace(errEnd.toString(), '').trim().slice(0, 4000);
      const finish = (e: SmError | null, result?: RunResult) => {
        clearTimeout(timer);
        child.stdout!.off('data', onOut);
        child.stderr!.off('data', onErr);
        child.off('close', onClose);
        if (e) reject(e);
        else resolve(result!);
      };
      const settle = () => {
        if (status === null || !errDone) return;
        const all = Buffer.concat(out);
        const stdout = all.subarray(0, all.lastIndexOf(outEnd)).toString('utf8');
        const stderr = stderrText();
        if (status === 0) return finish(null, { stdout, stderr });
        if (status === 127 && /not found/.test(stderr)) return finish(new SmError('UNAVAILABLE', `${file}: program not found`, details()));
        const why = stderr.split('\n')[0] || `exit code ${status}`;
        finish(new SmError(opts.errorCode ?? 'INTERNAL', `${file} failed: ${why}`, details()));
      };
      const onOut = (chunk: Buffer) => {
        out.push(chunk);
        outBytes += chunk.length;
        if (outBytes > maxBuffer + 64) {
          this.kill();
          return finish(new SmError(opts.errorCode ?? 'INTERNAL', `${file} failed: more than ${maxBuffer} bytes of output`, details()));
        }
        // The status line `\n<marker> <status>\n` (under 64 bytes) is the last thing the shell
        // writes for this call; it may arrive split across chunks.
        const window = Buffer.concat([tail, chunk]);
        tail = window.subarray(Math.max(0, window.length - 64));
        const at = window.lastIndexOf(outEnd);
        if (at < 0) return;
        const m = /^(\d+)\n/.exec(window.subarray(at + outEnd.length).toString('latin1'));
        if (!m) return;
        status = Number(m[1]);
        settle();
      };
      const onErr = (chunk: Buffer) => {
        err.push(chunk);
        if (Buffer.concat(err).includes(errEnd)) (errDone = true), settle();
      };
      const onClose = () => finish(new SmError(opts.errorCode ?? 'INTERNAL', `${file} failed: the shell running it ended`, details()));
      const timer = setTimeout(() => {
        this.kill();
        finish(new SmError(opts.errorCode ?? 'INTERNAL', `${file} timed out after ${timeoutMs} ms`, details()));
      }, timeoutMs);
      child.stdout!.on('data', onOut);
      child.stderr!.on('data', onErr);
      child.once('close', onClose);
      const line = [file, ...args].map(quote).join(' ');
      child.stdin!.write(`${line} </dev/null; printf '\\n%s %d\\n' ${marker} $?; printf '\\n%s\\n' ${marker} >&2\n`);
    });
  }
}

/** One shell word that stands for exactly `s`. */
function quote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
