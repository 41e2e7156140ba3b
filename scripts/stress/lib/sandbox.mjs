// `scripts/sandbox --hold` driven from a script (through scripts/lib/hold.mjs, as the tests do): a private
// real systemd stack whose bus and manager can be killed and started again through the hold's
// stdin commands, plus nsenter helpers to run programs (and smd) inside its namespaces.
import { spawn, execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { startHold } from '../../lib/hold.mjs';

export const ROOT = resolve(import.meta.dirname, '../../..');
const SANDBOX_SCRIPT = join(ROOT, 'scripts/sandbox');
const unixDgram = createRequire(import.meta.url)('unix-dgram');

export async function startSandbox({ startTimeoutMs = 30_000 } = {}) {
  const { info, control, stop } = await startHold(SANDBOX_SCRIPT, { startTimeoutMs, what: 'sandbox' });
  const env = { ...process.env, DBUS_SESSION_BUS_ADDRESS: info.bus, XDG_RUNTIME_DIR: info.runtimeDir, HOME: info.home, SMD_SANDBOX_DIR: info.dir, SMD_SANDBOX_PID: String(info.pid), SMD_SANDBOX_UNIT_DIR: info.unitDir };
  const nsArgs = (cmd, args) => ['-t', String(info.pid), '-m', '-n', '--', cmd, ...args];

  const sb = {
    ...info,
    env,
    control,
    /** Runs a program inside the namespaces, bounded; never rejects on exit code. */
    exec(cmd, args = [], { timeoutMs = 20_000, input } = {}) {
      return new Promise((res) => {
        const p = execFile('nsenter', nsArgs(cmd, args), { env, timeout: timeoutMs, encoding: 'utf8', maxBuffer: 32 << 20 }, (err, stdout, stderr) =>
          res({ stdout, stderr, code: err ? (typeof err.code === 'number' ? err.code : -1) : 0 }),
        );
        if (input !== undefined) p.stdin.end(input);
      });
    },
    async run(cmd, args = [], opts = {}) {
      const r = await sb.exec(cmd, args, opts);
      if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
      return r.stdout;
    },
    spawnInside(cmd, args = [], opts = {}) {
      return spawn('nsenter', nsArgs(cmd, args), { env, ...opts });
    },
    stop,
  };
  return sb;
}

/**
 * Starts the compiled smd inside the sandbox (nsenter execs it, so its pid is smd's) with a
 * config of our own, and resolves at READY=1 on a notify socket of ours, or rejects with its
 * output when it exits first. `sandbox` may be null: smd then runs on the host (used where no
 * systemd is needed).
 */
export async function startSmdInside(sandbox, dir, config, { readyTimeoutMs = 30_000, expectExit = false, nodeArgs = null } = {}) {
  const configPath = join(dir, `smd-${process.hrtime.bigint()}.json`);
  writeFileSync(configPath, JSON.stringify(config, null, 2));
  const notifyPath = join(dir, `notify-${process.hrtime.bigint()}.sock`);
  const notify = unixDgram.createSocket('unix_dgram');
  let onReady;
  const ready = new Promise((r) => (onReady = r));
  notify.on('message', (m) => m.toString().includes('READY=1') && onReady(performance.now()));
  notify.on('error', () => {});
  notify.bind(notifyPath);
  const argv = [join(ROOT, 'dist/bin/smd.js'), '--config', configPath];
  // nodeArgs (e.g. --cpu-prof) run the daemon through node with them instead of its shebang.
  const direct = nodeArgs ? [process.execPath, '--max-semi-space-size=1', ...nodeArgs, ...argv] : argv;
  const [cmd, ...args] = sandbox ? ['nsenter', '-t', String(sandbox.pid), '-m', '-n', '--', ...direct] : direct;
  const t0 = performance.now();
  const proc = spawn(cmd, args, { env: { ...process.env, ...(sandbox?.env ?? {}), NOTIFY_SOCKET: notifyPath }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  // Log messages (JSON lines) counted by level and message, so that callers can tell why smd did something.
  const logCounts = new Map();
  let partial = '';
  proc.stdout.on('data', (d) => {
    stdout = (stdout + d).slice(-200_000);
    const lines = (partial + d).split('\n');
    partial = lines.pop();
    for (const l of lines) {
      try {
        const { level, msg } = JSON.parse(l);
        const k = `${level}: ${msg}`;
        logCounts.set(k, (logCounts.get(k) ?? 0) + 1);
      } catch {
        /* not a log line */
      }
    }
  });
  proc.stderr.on('data', (d) => (stderr = (stderr + d).slice(-200_000)));
  const exited = new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal, at: performance.now() })));
  const outcome = await Promise.race([
    ready.then((at) => ({ ready: true, at })),
    exited.then((e) => ({ ready: false, ...e })),
    new Promise((r) => setTimeout(() => r({ ready: false, timeout: true }), readyTimeoutMs)),
  ]);
  // Kept open until smd exits, so that its STATUS= lines keep a listener (as under systemd).
  void exited.then(() => notify.close());
  const smd = {
    proc,
    configPath,
    socket: config.socket ?? join(config.runDir, 'smd.sock'),
    outcome,
    startMs: (outcome.at ?? performance.now()) - t0,
    exited,
    output: () => ({ stdout, stderr }),
    logCounts: () => Object.fromEntries(logCounts),
    rssKb: () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${proc.pid}/status`, 'utf8'))[1]),
    async stop(signal = 'SIGTERM', boundMs = 20_000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited;
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), boundMs);
      const e = await exited;
      clearTimeout(timer);
      return e;
    },
  };
  if (!outcome.ready && !expectExit) {
    await smd.stop('SIGKILL');
    throw new Error(`smd did not reach READY=1 (${JSON.stringify(outcome)}):\n${stderr}\n${stdout.slice(-4000)}`);
  }
  return smd;
}
