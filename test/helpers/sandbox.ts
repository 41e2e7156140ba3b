/**
 * A private real systemd stack for one test file: `scripts/sandbox --hold` (own mount and network
 * namespace, journald, session bus, `systemd --user`). The bus socket lives under /tmp, so this
 * process talks D-Bus to it directly; commands that must see the private /run or network run
 * inside through nsenter. Everything is torn down by PID when the test ends.
 */
import { spawn, execFile, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createInterface } from 'node:readline';
import { resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '../..');
export const SANDBOX_SCRIPT = resolve(ROOT, 'scripts/sandbox');

interface Tap {
  teardown(fn: () => unknown): void;
}

export interface SandboxInfo {
  dir: string;
  pid: number;
  bus: string;
  unitDir: string;
  runtimeDir: string;
  home: string;
  journaldPid: number;
  dbusPid: number;
  systemdPid: number;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface Sandbox extends SandboxInfo {
  /** Environment a process inside needs (bus address, runtime dir, home). */
  env: NodeJS.ProcessEnv;
  /** Run a program inside the namespaces (nsenter -t pid -m -n), bounded; never throws on exit code. */
  exec(cmd: string, args?: readonly string[], opts?: { timeoutMs?: number; input?: string }): Promise<ExecResult>;
  /** Like exec but rejects unless the exit code is 0. */
  run(cmd: string, args?: readonly string[], opts?: { timeoutMs?: number }): Promise<string>;
  spawnInside(cmd: string, args?: readonly string[], opts?: SpawnOptions): ChildProcess;
  /** SIGKILL the dbus-daemon (the sandbox keeps track of it). */
  killDbus(): Promise<void>;
  /** Start a new dbus-daemon on the same address and make the manager reconnect (SIGUSR1). */
  restartDbus(): Promise<number>;
  killSystemd(): Promise<void>;
  /** Start a new `systemd --user` and wait until it answers. */
  startSystemd(): Promise<number>;
  stop(): Promise<void>;
}

function parseInfo(line: string): SandboxInfo {
  const v = JSON.parse(line) as Partial<SandboxInfo>;
  for (const k of ['dir', 'bus', 'unitDir', 'runtimeDir', 'home'] as const) if (typeof v[k] !== 'string') throw new Error(`sandbox: bad ${k} in ${line}`);
  for (const k of ['pid', 'journaldPid', 'dbusPid', 'systemdPid'] as const) if (typeof v[k] !== 'number') throw new Error(`sandbox: bad ${k} in ${line}`);
  return v as SandboxInfo;
}

export async function startSandbox(t: Tap, opts: { startTimeoutMs?: number } = {}): Promise<Sandbox> {
  const startTimeoutMs = opts.startTimeoutMs ?? 30_000;
  const child = spawn(SANDBOX_SCRIPT, ['--hold'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8000)));
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  const lines = createInterface({ input: child.stdout! });
  const replies: ((line: string) => void)[] = [];
  let first: ((line: string) => void) | null = null;
  lines.on('line', (line) => {
    if (first) {
      const f = first;
      first = null;
      f(line);
    } else replies.shift()?.(line);
  });

  let stopped: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    if (stopped) return stopped;
    stopped = (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.stdin!.end(); // the script tears down when its stdin closes
        const timer = setTimeout(() => child.kill('SIGTERM'), 15_000);
        const hard = setTimeout(() => child.kill('SIGKILL'), 25_000);
        await exited;
        clearTimeout(timer);
        clearTimeout(hard);
      }
    })();
    return stopped;
  };
  t.teardown(stop);

  const info = await new Promise<SandboxInfo>((res, rej) => {
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      rej(new Error(`sandbox did not start within ${startTimeoutMs} ms: ${stderr}`));
    }, startTimeoutMs);
    first = (line) => {
      clearTimeout(timer);
      try {
        res(parseInfo(line));
      } catch (err) {
        rej(err as Error);
      }
    };
    void exited.then((code) => {
      clearTimeout(timer);
      rej(new Error(`sandbox exited with ${code} before it was ready: ${stderr}`));
    });
  });

  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DBUS_SESSION_BUS_ADDRESS: info.bus,
    XDG_RUNTIME_DIR: info.runtimeDir,
    HOME: info.home,
    SMD_SANDBOX_DIR: info.dir,
    SMD_SANDBOX_PID: String(info.pid),
    SMD_SANDBOX_UNIT_DIR: info.unitDir,
  };
  const nsArgs = (cmd: string, args: readonly string[]) => ['-t', String(info.pid), '-m', '-n', '--', cmd, ...args];

  const control = (cmd: string, timeoutMs = 30_000): Promise<{ ok: boolean; pid?: number; error?: string }> =>
    new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`sandbox: no answer to ${cmd} within ${timeoutMs} ms`)), timeoutMs);
      replies.push((line) => {
        clearTimeout(timer);
        const r = JSON.parse(line) as { ok: boolean; pid?: number; error?: string };
        if (!r.ok) rej(new Error(`sandbox: ${cmd}: ${r.error}`));
        else res(r);
      });
      child.stdin!.write(cmd + '\n');
    });

  const sandbox: Sandbox = {
    ...info,
    env,
    exec(cmd, args = [], o = {}) {
      return new Promise((res) => {
        const p = execFile('nsenter', nsArgs(cmd, args), { env, timeout: o.timeoutMs ?? 20_000, encoding: 'utf8', maxBuffer: 32 << 20 }, (err, stdout, stderr) => {
          const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
          res({ stdout, stderr, code });
        });
        if (o.input !== undefined) p.stdin!.end(o.input);
      });
    },
    async run(cmd, args = [], o = {}) {
      const r = await sandbox.exec(cmd, args, o);
      if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
      return r.stdout;
    },
    spawnInside(cmd, args = [], o = {}) {
      return spawn('nsenter', nsArgs(cmd, args), { env, ...o });
    },
    async killDbus() {
      await control('kill-dbus');
    },
    async restartDbus() {
      const r = await control('start-dbus');
      sandbox.dbusPid = r.pid!;
      return r.pid!;
    },
    async killSystemd() {
      await control('kill-systemd');
    },
    async startSystemd() {
      const r = await control('start-systemd');
      sandbox.systemdPid = r.pid!;
      return r.pid!;
    },
    stop,
  };
  return sandbox;
}

interface Listenable {
  on(event: string, fn: (...args: never[]) => void): unknown;
  off(event: string, fn: (...args: never[]) => void): unknown;
}

/**
 * Resolve with the first `event` payload that satisfies `pred` (checking `current()` first, if
 * given), or reject after `timeoutMs` naming what was awaited and the last payload seen.
 */
export function waitEvent<T>(emitter: Listenable, event: string, pred: (v: T) => boolean, timeoutMs: number, what: string, current?: () => T | undefined): Promise<T> {
  const now = current?.();
  if (now !== undefined && pred(now)) return Promise.resolve(now);
  return new Promise<T>((res, rej) => {
    let last: T | undefined;
    const fn = (v: T) => {
      last = v;
      if (!pred(v)) return;
      clearTimeout(timer);
      emitter.off(event, fn as (...args: never[]) => void);
      res(v);
    };
    const timer = setTimeout(() => {
      emitter.off(event, fn as (...args: never[]) => void);
      rej(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last ${event}: ${JSON.stringify(last)}`));
    }, timeoutMs);
    emitter.on(event, fn as (...args: never[]) => void);
  });
}
