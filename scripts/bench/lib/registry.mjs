/**
 * A local OCI registry for benchmarks (Debian's `docker-registry`, distribution 2.8) on
 * 127.0.0.1 in this network namespace, anonymous and plain HTTP, with a storage directory of its
 * own; and skopeo with a private, empty blob-info cache (a tmpfs over /var/lib/containers/cache
 * in a mount namespace of its own, as test/helpers/registry.ts does), so that nothing another run
 * pushed changes what it sends.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';

export const SKOPEO_CACHE = '/var/lib/containers/cache';

/** A TCP port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** Process groups of the programs run() has running, so that a failing bench can end them. */
const running = new Set();

/** Ends (SIGKILL) the process group of every program run() still has running. */
export function killRunning() {
  for (const pid of running) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  running.clear();
}

/**
 * Runs a program to its end in a process group of its own, bounded (the whole group is killed at
 * the timeout); resolves {code, stdout, stderr, ms}, never rejects on exit code.
 */
export function run(cmd, args, { timeoutMs = 120_000, env } = {}) {
  return new Promise((res, rej) => {
    const t0 = process.hrtime.bigint();
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...(env ? { env } : {}) });
    running.add(p.pid);
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr = (stderr + d).slice(-20_000)));
    const kill = () => {
      try {
        process.kill(-p.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    };
    const timer = setTimeout(kill, timeoutMs);
    p.once('error', (err) => (clearTimeout(timer), running.delete(p.pid), rej(err)));
    p.once('close', (code, signal) => {
      clearTimeout(timer);
      running.delete(p.pid);
      res({ code: code ?? `signal ${signal}`, stdout, stderr, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
    });
  });
}

/**
 * `unshare -m` + tmpfs over skopeo's cache, then `script` (sh) with `args` as $1...: the program
 * and arguments to run inside the private mount namespace.
 */
export function inPrivateCache(script, args) {
  if (!existsSync(SKOPEO_CACHE)) mkdirSync(SKOPEO_CACHE, { recursive: true, mode: 0o700 });
  return ['unshare', ['-m', '--propagation', 'private', '--', 'sh', '-c', `mount -t tmpfs tmpfs ${SKOPEO_CACHE} || exit 90\n${script}`, 'sh', ...args]];
}

/** skopeo with a private, empty cache and --insecure-policy. */
export function skopeo(args, o = {}) {
  const [cmd, a] = inPrivateCache('exec skopeo --insecure-policy "$@"', args);
  return run(cmd, a, o);
}

/** Starts docker-registry in `dir`; returns {host, port, stop()}. */
export async function startRegistry(dir, { startTimeoutMs = 15_000 } = {}) {
  const storage = join(dir, 'storage');
  mkdirSync(storage, { recursive: true });
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const config = {
      version: '0.1',
      log: { level: 'info', formatter: 'text', accesslog: { disabled: true } },
      storage: { filesystem: { rootdirectory: storage }, maintenance: { uploadpurging: { enabled: false } } },
      http: { addr: `127.0.0.1:${port}`, secret: randomUUID() },
    };
    const configPath = join(dir, 'config.yml'); // YAML is a superset of JSON
    writeFileSync(configPath, JSON.stringify(config, null, 2));
    const p = spawn('docker-registry', ['serve', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    const started = await new Promise((res) => {
      const timer = setTimeout(() => res(`no "listening on" within ${startTimeoutMs} ms`), startTimeoutMs);
      p.stderr.on('data', (d) => {
        log = (log + d).slice(-20_000); // keep draining it for the registry's whole life
        if (log.includes(`listening on 127.0.0.1:${port}`)) clearTimeout(timer), res('ok');
      });
      p.once('error', (err) => (clearTimeout(timer), res(`cannot start docker-registry: ${err.message}`)));
      p.once('exit', (code) => (clearTimeout(timer), res(/address already in use/.test(log) ? 'inuse' : `exited ${code}`)));
    });
    if (started === 'ok') {
      const exited = new Promise((res) => (p.exitCode !== null || p.signalCode !== null ? res() : p.once('exit', res)));
      return {
        host: `127.0.0.1:${port}`,
        port,
        pid: p.pid,
        log: () => log,
        async stop() {
          if (p.exitCode === null && p.signalCode === null) {
            p.kill('SIGTERM');
            const hard = setTimeout(() => p.kill('SIGKILL'), 3000);
            await exited;
            clearTimeout(hard);
          }
        },
      };
    }
    p.kill('SIGKILL');
    if (started !== 'inuse' || attempt >= 3) throw new Error(`docker-registry did not start: ${started}\n${log.slice(-4000)}`);
  }
}
