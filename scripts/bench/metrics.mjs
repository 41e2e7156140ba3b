#!/usr/bin/env node
// Benchmark of the Prometheus metrics (src/metrics/): the cost of building the exposition for 200
// services per sample, and what `metrics.textfile` adds to a monitoring sample.
//
// - exposition: MetricsCollector.text() on a real SQLite file with 200 services and 2000 alerts,
//   200 services' sample, 400 traffic chains, 30 RPC methods with latencies (median of RUNS);
//   the pure text building alone (buildExposition) beside it.
// - sample cost: Monitor.sampleNow() over the same 200 services (a systemd stand-in answering
//   at once, so the figure is smd's own work), metrics.textfile off and on (atomic write with
//   fsync into a temporary directory), interleaved so that noise hits both alike. Off is the
//   baseline; the run also counts how many expositions were built while off (must be 0). The
//   atomic write alone is measured beside it: on a real disk its two fsyncs are most of the cost.
//
//   npm run build && node scripts/bench/metrics.mjs        (BENCH_RUNS=N, SMD_DIST=<dir>)
//
// Prints one JSON object: {name: "metrics", figures: [{name, value, unit, baseline?, ratio?, target?, met?}]}.
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { figure, median, round } from './lib/stats.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const dist = process.env.SMD_DIST ?? join(root, 'dist');
const RUNS = Number(process.env.BENCH_RUNS ?? 200);
const SAMPLE_RUNS = Number(process.env.BENCH_SAMPLE_RUNS ?? 40);
const N = 200;

const { openDatabase } = await import(join(dist, 'db/database.js'));
const { services, alerts } = await import(join(dist, 'db/schema.js'));
const { silentLogger } = await import(join(dist, 'log.js'));
const { Monitor } = await import(join(dist, 'monitoring/monitor.js'));
const { MetricsCollector, buildExposition } = await import(join(dist, 'metrics/collector.js'));
const { OperationStats, RpcStats } = await import(join(dist, 'metrics/counters.js'));
const { TextfileWriter } = await import(join(dist, 'metrics/textfile.js'));

const dir = mkdtempSync(join(tmpdir(), 'smd-bench-metrics-'));
const figures = [];
try {
  const { db, close } = openDatabase(join(dir, 'smd.db'));
  const now = Date.now();
  const id = (i) => `org.example.service-${String(i).padStart(3, '0')}`;
  db.$client.transaction(() => {
    for (let i = 0; i < N; i++) db.insert(services).values({ id: id(i), version: 1 + (i % 7), unit: `smd-${id(i)}.service`, storageLimit: 64 << 20, stateLimit: 1 << 20, createdAt: now, updatedAt: now }).run();
    for (let i = 0; i < 2000; i++) db.insert(alerts).values({ time: now, source: i % 3 ? 'monitoring' : 'journal', serviceId: id(i % N), kind: i % 3 ? 'rule.memory' : 'journal.err', message: 'm' }).run();
  })();

  // A systemd stand-in: every unit active, with memory and tasks, answered at once.
  const systemd = {
    getUnits: async (names) =>
      names.map((unit, i) => ({ unit, loadState: 'loaded', activeState: 'active', subState: 'running', result: 'success', execMainStatus: 0, execMainCode: 0, mainPid: null, restarts: i % 3, since: now, memoryCurrent: 10_000_000 + i, tasksCurrent: 1 + (i % 5) })),
  };
  const traffic = [
    { chain: 'SMD_SYSTEM_IN', serviceId: null, direction: 'in', bytes: 123456789, limit: null, blocked: false, periodStart: now },
    { chain: 'SMD_SYSTEM_OUT', serviceId: null, direction: 'out', bytes: 98765432, limit: null, blocked: false, periodStart: now },
    ...Array.from({ length: N }, (_, i) => [
      { chain: `SMD_${i}_IN`, serviceId: id(i), direction: 'in', bytes: 1_000_000 * i, limit: i % 2 ? 5e9 : null, blocked: false, periodStart: now },
      { chain: `SMD_${i}_OUT`, serviceId: id(i), direction: 'out', bytes: 500_000 * i, limit: null, blocked: i % 50 === 0, periodStart: now },
    ]).flat(),
  ];
  const rpc = new RpcStats();
  for (let m = 0; m < 30; m++) for (let k = 0; k < 100; k++) rpc.observe(`domain${m % 6}.method${m}`, k % 10 ? 'ok' : 'NOT_FOUND', (k % 40) / 1000);
  const operations = new OperationStats();
  for (let k = 0; k < 50; k++) operations.observe({ id: `op${k}`, kind: ['services.install', 'services.remove', 'layers.prune'][k % 3], state: k % 5 ? 'succeeded' : 'failed' });

  const build = { version: JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version, node: process.version, startedAt: now };
  const monitorOpts = { db, systemd, logger: silentLogger, dataDir: dir, intervalMs: 60_000 };
  const plain = new Monitor(monitorOpts);
  await plain.sampleNow();
  const collector = new MetricsCollector({ db, build, snapshot: () => plain.get(), traffic: () => traffic, operations, rpc });
  // Every exposition built is counted, to show that none is built for a sample with the textfile off.
  let built = 0;
  const text0 = collector.text.bind(collector);
  collector.text = (s) => (built++, text0(s));

  // ---- exposition for 200 services
  const text = collector.text();
  const whole = [];
  const pure = [];
  const input = { build, snapshot: plain.get(), versions: new Map(Array.from({ length: N }, (_, i) => [id(i), 1])), traffic, alerts: [], operations: { finished: operations.finishedCounts(), inProgress: [] }, rpc: rpc.entries() };
  for (let r = 0; r < RUNS; r++) {
    let t0 = performance.now();
    collector.text();
    whole.push(performance.now() - t0);
    t0 = performance.now();
    buildExposition(input);
    pure.push(performance.now() - t0);
  }
  const lines = text.split('\n').filter((l) => l && !l.startsWith('#')).length;
  figures.push(figure(`exposition for ${N} services per sample (collector, SQLite reads included; median of ${RUNS})`, median(whole), 'ms', { target: '<= 5', series: lines, bytes: Buffer.byteLength(text) }));
  figures.push(figure(`exposition text only (buildExposition, ${N} services)`, median(pure), 'ms', { series: lines }));

  // ---- sample cost, textfile off and on
  const promFile = join(dir, 'textfile', 'smd.prom');
  (await import('node:fs')).mkdirSync(dirname(promFile));
  const writer = new TextfileWriter(promFile, silentLogger);
  // Off: no hook at all, exactly as the daemon builds the monitor without metrics.textfile.
  const off = new Monitor(monitorOpts);
  const on = new Monitor({ ...monitorOpts, afterSample: (s) => writer.write(collector.text(s)) });
  await off.sampleNow();
  await on.sampleNow();
  const offTimes = [];
  const onTimes = [];
  const writeTimes = [];
  let builtWhileOff = 0;
  for (let r = 0; r < SAMPLE_RUNS; r++) {
    const b0 = built;
    let t0 = performance.now();
    await off.sampleNow();
    offTimes.push(performance.now() - t0);
    builtWhileOff += built - b0;
    t0 = performance.now();
    await on.sampleNow();
    onTimes.push(performance.now() - t0);
    t0 = performance.now();
    await writer.write(text);
    writeTimes.push(performance.now() - t0);
  }
  const offMs = median(offTimes);
  figures.push(figure(`monitoring sample, ${N} services, metrics.textfile off (median of ${SAMPLE_RUNS})`, offMs, 'ms', { expositionsBuilt: builtWhileOff }));
  figures.push(figure(`monitoring sample, ${N} services, metrics.textfile on (build + write + fsync + rename)`, median(onTimes), 'ms', { baseline: round(offMs), textfileBytes: statSync(promFile).size }));
  figures.push(figure('of which the atomic write alone (temp file, fsync, rename, fsync dir)', median(writeTimes), 'ms', { dir: tmpdir() }));
  close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify({ name: 'metrics', figures }, null, 2) + '\n');
