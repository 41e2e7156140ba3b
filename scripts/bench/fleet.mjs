// Fleet bench (issue 17, "Scale, simulated"): one Mosquitto on 127.0.0.1 (host netns, a random
// port), N simulated devices — the real fleet bridge (dist/fleet/bridge.js) with a stand-in for
// the rest of smd (scripts/bench/lib/fleet-devices.mjs) — in a few worker processes. Measures:
// memory per bridge; the broker killed and restarted: time until all reconnected (jittered
// backoff at smd's defaults) and the peak connection attempts per second; a desired state
// published to every device: time until each `reported` says applied (p50/p99/all).
// Prints one JSON object {name, figures}.
import { fork, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import mqtt from 'mqtt';
import { figure, percentile } from './lib/stats.mjs';

const N = Number(process.env.BENCH_FLEET_N ?? 500);
const WORKERS = Number(process.env.BENCH_FLEET_WORKERS ?? 2);
const DOWN_MS = Number(process.env.BENCH_FLEET_DOWN_MS ?? 5000);
const PREFIX = 'bench';
const log = (m) => process.stderr.write(`fleet bench: ${m}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}
async function until(what, pred, timeoutMs, everyMs = 200) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await sleep(everyMs); // poll interval of a bounded wait
  }
}

// Every bridge holds a socket here and mosquitto one per bridge: check the limit first.
const nofile = Number(execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim());
const needed = N + 256;
const raise = Number.isFinite(nofile) && nofile < needed;
if (raise) log(`ulimit -n is ${nofile}; workers and the broker are started with ${needed * 2}`);
const withLimit = (cmd, args) => (raise ? ['sh', ['-c', `ulimit -n ${needed * 2} && exec "$0" "$@"`, cmd, ...args]] : [cmd, args]);

const dir = mkdtempSync(join(tmpdir(), 'smd-bench-fleet-'));
const port = await freePort();
const conf = join(dir, 'mosquitto.conf');
writeFileSync(conf, ['per_listener_settings false', 'allow_anonymous true', 'persistence false', 'user root', 'log_dest stderr', 'log_type error', 'log_type warning', `listener ${port} 127.0.0.1`, ''].join('\n'));
let broker = null;
let brokerOut = '';
async function startBroker() {
  const [cmd, args] = withLimit('/usr/sbin/mosquitto', ['-c', conf]);
  broker = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  broker.stderr.on('data', (d) => (brokerOut = (brokerOut + d).slice(-4000)));
  await until(
    'mosquitto listening',
    () =>
      new Promise((res) => {
        if (broker.exitCode !== null) throw new Error(`mosquitto exited ${broker.exitCode}: ${brokerOut}`);
        const s = net.connect(port, '127.0.0.1', () => (s.destroy(), res(true)));
        s.on('error', () => res(false));
      }),
    10_000,
    20,
  );
  return Date.now();
}
async function killBroker() {
  const b = broker;
  const exited = new Promise((r) => b.once('exit', r));
  b.kill('SIGKILL');
  await exited;
}

const workers = [];
function request(w, msg, ev) {
  return new Promise((res, rej) => {
    const on = (m) => {
      if (m.ev === 'error') return (w.off('message', on), rej(new Error(m.error)));
      if (m.ev === ev) return (w.off('message', on), res(m));
    };
    w.on('message', on);
    w.send(msg);
  });
}
async function stats(memory = false) {
  const all = await Promise.all(workers.map((w) => request(w, { op: 'stats', memory }, 'stats')));
  return { attempts: all.flatMap((s) => s.attempts), connects: all.flatMap((s) => s.connects), connected: all.flatMap((s) => s.connected), mem: all.map((s) => s.mem) };
}

/** The operator's side: one client that sees every device's reports and `online`. */
async function operator() {
  const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId: `operator-${process.pid}-${Date.now()}`, reconnectPeriod: 0, clean: true });
  await new Promise((res, rej) => (c.once('connect', res), c.once('error', rej)));
  const online = new Map();
  const reports = new Map();
  c.on('message', (topic, payload) => {
    const [, id, name] = topic.split('/');
    if (name === 'online') online.set(id, payload.toString());
    else if (name === 'reported') {
      const r = JSON.parse(payload.toString());
      (reports.get(id) ?? reports.set(id, []).get(id)).push({ at: Date.now(), r });
    }
  });
  await c.subscribeAsync([`${PREFIX}/+/online`, `${PREFIX}/+/reported`], { qos: 1 });
  return { c, online, reports };
}

const figures = [];
const started = Date.now();
try {
  await startBroker();
  log(`mosquitto on 127.0.0.1:${port}; ${N} bridges in ${WORKERS} processes`);
  const per = Math.ceil(N / WORKERS);
  for (let w = 0, from = 0; from < N; w++, from += per) {
    const [cmd, args] = withLimit(process.execPath, ['--expose-gc', join(import.meta.dirname, 'lib/fleet-devices.mjs')]);
    const child = cmd === process.execPath ? fork(args[1], [], { execArgv: ['--expose-gc'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }) : spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    await new Promise((r) => child.once('message', r)); // ready
    workers.push(child);
    await request(child, { op: 'start', url: `mqtt://127.0.0.1:${port}`, from, count: Math.min(per, N - from), prefix: PREFIX }, 'started');
  }
  await until('every bridge connected', async () => (await stats()).connected.every(Boolean), 60_000);
  const op1 = await operator();
  await until('every device online', () => [...op1.online.values()].filter((v) => v === 'true').length === N, 30_000);
  log(`all ${N} connected and online after ${Date.now() - started} ms`);
  await sleep(1500); // let the reports at connect settle before memory is read
  const mem = (await stats(true)).mem;
  const avg = (k) => mem.reduce((a, m) => a + m[k], 0) / mem.length / 1024;
  figures.push(figure('memory per bridge (RSS growth / bridges, incl. MQTT.js client, socket, in-memory SQLite outbox)', avg('rss'), 'KiB'));
  figures.push(figure('memory per bridge (JS heap)', avg('heapUsed'), 'KiB'));
  op1.c.end(true);

  // The broker killed and started again after DOWN_MS.
  const killedAt = Date.now();
  const before = (await stats()).connects.map((c) => c.length);
  await killBroker();
  await sleep(DOWN_MS); // the outage
  const upAt = await startBroker();
  log(`broker back after ${upAt - killedAt} ms`);
  const back = await until(
    'every bridge reconnected',
    async () => {
      const s = await stats();
      return s.connects.every((c, i) => c.length > before[i]) ? s : null;
    },
    90_000,
    250,
  );
  const reconnectAt = back.connects.map((c, i) => c[before[i]]).sort((a, b) => a - b);
  const allBackMs = reconnectAt.at(-1) - upAt;
  figures.push(figure(`broker restarted (down ${DOWN_MS} ms): all ${N} reconnected, after the broker is back`, allBackMs, 'ms', { target: '< 60000' }));
  figures.push(figure('reconnect after the broker is back, p50', percentile(reconnectAt.map((t) => t - upAt), 50), 'ms'));
  const tries = back.attempts.filter((t) => t >= killedAt);
  const bins = new Map();
  for (const t of tries) bins.set(Math.floor((t - killedAt) / 1000), (bins.get(Math.floor((t - killedAt) / 1000)) ?? 0) + 1);
  figures.push(figure('peak connection attempts per second (1 s bins, from the kill to all reconnected)', Math.max(...bins.values()), 'attempts/s'));
  figures.push(figure('connection attempts from the kill to all reconnected', tries.length, 'attempts'));
  const upBins = [...bins].filter(([b]) => b * 1000 >= upAt - killedAt).map(([, n]) => n);
  figures.push(figure('peak connection attempts per second once the broker is back', Math.max(0, ...upBins), 'attempts/s'));

  // A desired state to every device.
  const op2 = await operator();
  await until('every device online again', () => [...op2.online.values()].filter((v) => v === 'true').length === N, 30_000);
  const sentAt = new Map();
  const desired = (i) => JSON.stringify({ version: 1, services: [{ id: 'app', version: 1, image: `/images/app-${i}.tar` }], layers: [] });
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: N }, async (_, i) => {
      sentAt.set(`dev-${i}`, Date.now());
      await op2.c.publishAsync(`${PREFIX}/dev-${i}/desired`, desired(i), { qos: 1, retain: true });
    }),
  );
  const appliedAt = (id) => op2.reports.get(id)?.find((x) => x.at >= sentAt.get(id) && x.r.desiredVersion === 1 && x.r.status.state === 'applied' && x.r.services.length === 1)?.at;
  await until('every report says applied', () => [...sentAt.keys()].every((id) => appliedAt(id) !== undefined), 60_000, 100);
  const lat = [...sentAt.keys()].map((id) => appliedAt(id) - sentAt.get(id)).sort((a, b) => a - b);
  const apply = Number(process.env.BENCH_FLEET_APPLY_MS ?? 200);
  figures.push(figure(`desired to all ${N} → reported applied, p50 (stand-in apply ${apply} ms, report debounce 250/1000 ms)`, percentile(lat, 50), 'ms'));
  figures.push(figure(`desired to all ${N} → reported applied, p99`, percentile(lat, 99), 'ms'));
  figures.push(figure(`desired to all ${N} → every reported applied (from the first publish)`, Math.max(...[...sentAt.keys()].map((id) => appliedAt(id))) - t0, 'ms'));
  op2.c.end(true);
  figures.push(figure('bench wall time', (Date.now() - started) / 1000, 's'));
} finally {
  await Promise.all(workers.map((w) => new Promise((r) => (w.once('exit', r), w.send({ op: 'stop' }), setTimeout(() => (w.kill('SIGKILL'), r()), 10_000).unref()))));
  if (broker && broker.exitCode === null) await killBroker();
  rmSync(dir, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify({ name: 'fleet', figures }, null, 2) + '\n');
