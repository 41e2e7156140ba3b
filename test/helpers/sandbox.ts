/**
 * A private real systemd stack for one test file: `scripts/sandbox --hold` (own mount and network
 * namespace, journald, session bus, `systemd --user`). The bus socket lives under /tmp, so this
 * process talks D-Bus to it directly; commands that must see the private /run or network run
 * inside through nsenter. Everything is torn down by PID when the test ends.
 */
import { spawn, execFile, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { resolve } from 'node:path';
import { startHold } from '../../scripts/lib/hold.mjs';

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

/** Runs a program, bounded; resolves with its output and exit code (-1 when it did not exit normally). */
export function execBounded(file: string, argv: readonly string[], o: { env?: NodeJS.ProcessEnv; timeoutMs: number; input?: string }): Promise<ExecResult> {
  return new Promise((res) => {
    const p = execFile(file, argv, { env: o.env ?? process.env, timeout: o.timeoutMs, encoding: 'utf8', maxBuffer: 32 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      res({ stdout, stderr, code });
    });
    if (o.input !== undefined) p.stdin!.end(o.input);
  });
}

/** The output of a run that must exit 0, else an error naming the command and its stderr. */
export async function succeeded(result: Promise<ExecResult>, cmd: string, args: readonly string[]): Promise<string> {
  const r = await result;
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

function checkInfo(v: Partial<SandboxInfo>): SandboxInfo {
  for (const k of ['dir', 'bus', 'unitDir', 'runtimeDir', 'home'] as const) if (typeof v[k] !== 'string') throw new Error(`sandbox: bad ${k} in ${JSON.stringify(v)}`);
  for (const k of ['pid', 'journaldPid', 'dbusPid', 'systemdPid'] as const) if (typeof v[k] !== 'number') throw new Error(`sandbox: bad ${k} in ${JSON.stringify(v)}`);
  return v as SandboxInfo;
}

export async function startSandbox(t: Tap, opts: { startTimeoutMs?: number } = {}): Promise<Sandbox> {
  const hold = await startHold<Partial<SandboxInfo>>(SANDBOX_SCRIPT, { startTimeoutMs: opts.startTimeoutMs ?? 30_000, what: 'sandbox' });
  t.teardown(hold.stop);
  const info = checkInfo(hold.info);
  const stop = hold.stop;

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

  const control = (cmd: string) => hold.control(cmd, 30_000) as Promise<{ ok: boolean; pid?: number }>;

  const sandbox: Sandbox = {
    ...info,
    env,
    exec: (cmd, args = [], o = {}) => execBounded('nsenter', nsArgs(cmd, args), { env, timeoutMs: o.timeoutMs ?? 20_000, ...(o.input !== undefined ? { input: o.input } : {}) }),
    run: (cmd, args = [], o = {}) => succeeded(sandbox.exec(cmd, args, o), cmd, args),
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
