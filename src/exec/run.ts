import { execFile } from 'node:child_process';
import { SmError, type ErrorCode } from '../errors.js';

export interface RunOptions {
  timeoutMs?: number;
  input?: string;
  env?: NodeJS.ProcessEnv;
  /** Error code used when the program fails (default INTERNAL). */
  errorCode?: ErrorCode;
  maxBuffer?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/**
 * The one door to external programs: an argument array (never a shell string), a timeout,
 * captured output, and an SmError that names the program, its exit code and stderr.
 */
export function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeout = opts.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { timeout, env: opts.env ?? process.env, maxBuffer: opts.maxBuffer ?? 64 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (!err) return resolve({ stdout, stderr });
        const e = err as NodeJS.ErrnoException & { code?: string | number; killed?: boolean; signal?: string };
        const details = { program: file, args: [...args], exitCode: typeof e.code === 'number' ? e.code : null, signal: e.signal ?? null, stderr: String(stderr).trim().slice(0, 4000) };
        if (e.code === 'ENOENT') return reject(new SmError('UNAVAILABLE', `${file}: program not found`, details, { cause: err }));
        if (e.killed && e.signal === 'SIGTERM') return reject(new SmError(opts.errorCode ?? 'INTERNAL', `${file} timed out after ${timeout} ms`, details, { cause: err }));
        const why = details.stderr.split('\n')[0] || `exit code ${String(details.exitCode ?? details.signal)}`;
        reject(new SmError(opts.errorCode ?? 'INTERNAL', `${file} failed: ${why}`, details, { cause: err }));
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}
