/**
 * Starts the real smd (compiled, from dist/) on temporary directories and waits for its
 * READY=1 on a notify socket of our own, as systemd would. Run `npm run build` first.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { RpcClient } from '../../src/cli/client.js';
import type { Sandbox } from './sandbox.js';

export const ROOT = resolve(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '../..');
export const DAEMON = join(ROOT, 'dist/bin/smd.js');
export const SMCTL = join(ROOT, 'dist/bin/smctl.js');

interface Tap {
  teardown(fn: () => unknown): void;
}

export interface NotifyListener {
  path: string;
  messages: string[];
  /** Resolves with the first message (seen or future) containing `text`. */
  waitFor(text: string, timeoutMs?: number): Promise<string>;
  close(): void;
}

const unixDgram = createRequire(import.meta.url)('unix-dgram') as {
  createSocket(type: 'unix_dgram', cb?: (msg: Buffer) => void): { bind(p: string): void; close(): void; on(e: string, f: (...a: unknown[]) => void): void };
};

export function notifyListener(dir: string): NotifyListener {
  const path = join(dir, `notify-${process.hrtime.bigint()}.sock`);
  const messages: string[] = [];
  const waiters: { text: string; resolve(m: string): void }[] = [];
  const socket = unixDgram.createSocket('unix_dgram', (msg) => {
    const text = msg.toString();
    messages.push(text);
    for (const w of [...waiters]) if (text.includes(w.text)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(text);
    }
  });
  socket.on('error', () => {});
  socket.bind(path);
  return {
    path,
    messages,
    waitFor(text, timeoutMs = 10_000) {
      const seen = messages.find((m) => m.includes(text));
      if (seen) return Promise.resolve(seen);
      return new Promise((resolveWait, reject) => {
        const timer = setTimeout(() => reject(new Error(`no "${text}" on the notify socket within ${timeoutMs} ms; got ${JSON.stringify(messages)}`)), timeoutMs);
        waiters.push({ text, resolve: (m) => (clearTimeout(timer), resolveWait(m)) });
      });
    },
    close: () => socket.close(),
  };
}

export interface RunningDaemon {
  dir: string;
  configPath: string;
  socket: string;
  readOnlySocket: string;
  dbPath: string;
  proc: ChildProcess;
  notify: NotifyListener;
  output: () => string;
  client(readOnly?: boolean): Promise<RpcClient>;
  /** SIGTERM and wait for exit; returns the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
}

export function tempDir(t: Tap, prefix = 'smd-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  // Retried: a service of a sandbox torn down at the same time may still be writing into it (CI saw ENOTEMPTY).
  t.teardown(() => rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 }));
  return dir;
}

/**
 * A config on scratch directories. Without a sandbox, systemd points at a bus that does not
 * exist, so no test can ever reach a host's real systemd.
 */
export function writeConfig(dir: string, extra: Record<string, unknown> = {}, sandbox?: Sandbox): string {
  const configPath = join(dir, 'smd.json');
  const systemd = sandbox ? { bus: sandbox.bus, unitDir: sandbox.unitDir, callTimeoutMs: 5000 } : { bus: `unix:path=${join(dir, 'no-bus')}`, unitDir: join(dir, 'units') };
  // Outside a sandbox, never touch the host's firewall or network.
  const base = { dataDir: join(dir, 'data'), runDir: join(dir, 'run'), logLevel: 'debug', systemd, services: { settleMs: 300 }, ...(sandbox ? {} : { traffic: { enabled: false } }) };
  const merged = { ...base, ...extra, systemd: { ...systemd, ...((extra.systemd as object) ?? {}) }, services: { ...base.services, ...((extra.services as object) ?? {}) } };
  writeFileSync(configPath, JSON.stringify(merged, null, 2));
  return configPath;
}

/** Starts smd and resolves once it sent READY=1. */
export async function startDaemon(t: Tap, opts: { dir?: string; config?: Record<string, unknown>; env?: NodeJS.ProcessEnv; sandbox?: Sandbox } = {}): Promise<RunningDaemon> {
  const dir = opts.dir ?? tempDir(t);
  const configPath = writeConfig(dir, opts.config, opts.sandbox);
  const notify = notifyListener(dir);
  let out = '';
  // Inside a sandbox smd runs in its namespaces (mounts, network) through nsenter, which execs it.
  // The daemon runs as installed: through its shebang, with its V8 flags.
  const argv = [DAEMON, '--config', configPath];
  const [cmd, ...args] = opts.sandbox ? ['nsenter', '-t', String(opts.sandbox.pid), '-m', '-n', '--', ...argv] : argv;
  const proc = spawn(cmd!, args, {
    env: { ...process.env, ...(opts.sandbox?.env ?? {}), NOTIFY_SOCKET: notify.path, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((res) => proc.once('exit', (code) => res(code)));
  const clients: RpcClient[] = [];
  const running: RunningDaemon = {
    dir,
    configPath,
    socket: join(dir, 'run/smd.sock'),
    readOnlySocket: join(dir, 'run/smd-ro.sock'),
    dbPath: join(dir, 'data/smd.db'),
    proc,
    notify,
    output: () => out,
    exited,
    async client(readOnly = false) {
      const c = await RpcClient.connect(readOnly ? running.readOnlySocket : running.socket);
      clients.push(c);
      return c;
    },
    async stop(signal = 'SIGTERM') {
      for (const c of clients) c.close();
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
  t.teardown(async () => {
    await running.stop('SIGKILL');
    notify.close();
  });
  await Promise.race([
    notify.waitFor('READY=1', 30_000),
    exited.then((code) => {
      throw new Error(`smd exited with ${code} before READY=1:\n${out}`);
    }),
  ]);
  return running;
}

export interface ExampleImages {
  baseLayer: string;
  images: { name: string; version: number | null; path: string; layers: string[] }[];
  /** Archive path by `<name>-v<version>`, e.g. `hello-http-v1`. */
  byName: Record<string, string>;
}

/** Builds the example OCI archives of scripts/images/build.mjs into `dir` (extra args: e.g. --version 1). */
export function buildExampleImages(dir: string, args: string[] = []): ExampleImages {
  const out = JSON.parse(execFileSync(process.execPath, [join(ROOT, 'scripts/images/build.mjs'), dir, ...args], { encoding: 'utf8' })) as Omit<ExampleImages, 'byName'>;
  return { ...out, byName: Object.fromEntries(out.images.map((i) => [`${i.name}-v${i.version}`, i.path])) };
}
