// Starts the compiled smd on a scratch directory and resolves at READY=1 (as systemd would see it).
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const require = createRequire(import.meta.url);
const unixDgram = require('unix-dgram');
export const ROOT = resolve(import.meta.dirname, '../../..');

/** A scratch directory; inside a sandbox it lives in the sandbox's own dir, torn down with it. */
export function scratchDir(prefix = 'smd-bench-') {
  return mkdtempSync(join(process.env.SMD_SANDBOX_DIR ?? tmpdir(), prefix));
}

/** Returns {proc, socket, readyMs, rssKb(), stop()}; readyMs is from spawn to READY=1. */
/** `nodeArgs` (e.g. --cpu-prof) run the daemon through node with them instead of its shebang; */
/** `main` replaces the daemon (the start-up floor of bench/rpc). */
export async function startSmd(dir, config = {}, env = {}, nodeArgs = null, main = join(ROOT, 'dist/bin/smd.js')) {
  const configPath = join(dir, 'smd.json');
  // Outside a sandbox the host's firewall and network are never touched.
  const traffic = process.env.SMD_SANDBOX_DIR ? {} : { traffic: { enabled: false } };
  writeFileSync(configPath, JSON.stringify({ dataDir: join(dir, 'data'), runDir: join(dir, 'run'), logLevel: 'warn', ...traffic, ...config }));
  const notifyPath = join(dir, `notify-${process.hrtime.bigint()}.sock`);
  const notify = unixDgram.createSocket('unix_dgram');
  let onReady;
  const ready = new Promise((r) => (onReady = r));
  notify.on('message', (m) => m.toString().includes('READY=1') && onReady(performance.now()));
  notify.bind(notifyPath);
  const t0 = performance.now();
  const [cmd, args] = nodeArgs ? [process.execPath, [...nodeArgs, main, '--config', configPath]] : [main, ['--config', configPath]];
  const proc = spawn(cmd, args, { env: { ...process.env, NOTIFY_SOCKET: notifyPath, ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise((r) => proc.once('exit', r));
  const readyAt = await Promise.race([ready, exited.then((c) => { throw new Error(`smd exited ${c} before READY`); })]);
  notify.close();
  return {
    proc,
    socket: join(dir, 'run/smd.sock'),
    readyMs: readyAt - t0,
    rssKb: () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${proc.pid}/status`, 'utf8'))[1]),
    stop: async () => { proc.kill('SIGTERM'); await exited; },
  };
}
