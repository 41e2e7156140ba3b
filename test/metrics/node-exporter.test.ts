/**
 * smd's metrics through a real Prometheus parser: Debian's prometheus-node-exporter, started in
 * the sandbox's network namespace with only its textfile collector, reading smd's
 * `metrics.textfile`, scraped over loopback there. The whole real stack: smd as installed
 * (dist/), a real service with real traffic through iptables, systemd --user over D-Bus.
 */
import t from 'tap';
import { chmodSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RpcClient } from '../../src/cli/client.js';
import type { MonitoringSnapshot } from '../../src/monitoring/monitor.js';
import type { TrafficRow } from '../../src/traffic/types.js';
import { ROOT, SMCTL, startDaemon, tempDir } from '../helpers/daemon.js';
import { servicesFixture } from '../helpers/services-fixture.js';
import { execBounded, type Sandbox } from '../helpers/sandbox.js';

const NODE_EXPORTER = '/usr/bin/prometheus-node-exporter';
const SCRAPE = fileURLToPath(new URL('./fixtures/scrape.mjs', import.meta.url));
/** The sandbox has a network namespace of its own: this port is free there. */
const PORT = 19100 + (process.pid % 500);
const URL_ = `http://127.0.0.1:${PORT}/metrics`;

if (!existsSync(NODE_EXPORTER)) {
  t.fail(`${NODE_EXPORTER} is missing: apt-get install prometheus-node-exporter`);
  process.exit(1);
}

interface Scrape {
  scrapes: { scrapeError: number | null; sampledAt: number | null; smdLines: number }[];
  last: string;
  error?: string;
}

async function scrape(sb: Sandbox, count = 1, intervalMs = 0): Promise<Scrape> {
  const r = await sb.exec(process.execPath, [SCRAPE, URL_, String(count), String(intervalMs)], { timeoutMs: 120_000 });
  const out = JSON.parse(r.stdout || '{}') as Scrape;
  if (r.code !== 0) throw new Error(`scrape failed (${r.code}): ${out.error ?? r.stderr}`);
  return out;
}

/** `name{a="x",b="y"}` (labels sorted, as node_exporter writes them) → value, for smd_* and node_textfile_*. */
function series(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('smd_') && !line.startsWith('node_textfile_')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable line from node_exporter: ${line}`);
    const labels = m[3] ? parseLabels(m[3]) : [];
    out.set(key(m[1]!, Object.fromEntries(labels)), Number(m[4]));
  }
  return out;
}

function parseLabels(s: string): [string, string][] {
  const out: [string, string][] = [];
  const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/gy;
  let m;
  while ((m = re.exec(s))) out.push([m[1]!, m[2]!.replace(/\\(.)/g, (_x, c: string) => (c === 'n' ? '\n' : c))]);
  return out;
}

function key(name: string, labels: Record<string, string> = {}): string {
  const l = Object.entries(labels)
    .filter(([, v]) => v !== '')
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(',');
  return l ? `${name}{${l}}` : name;
}

function startNodeExporter(t: Tap, sb: Sandbox, dir: string): void {
  const p = sb.spawnInside(NODE_EXPORTER, ['--collector.disable-defaults', '--collector.textfile', `--collector.textfile.directory=${dir}`, `--web.listen-address=127.0.0.1:${PORT}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr!.on('data', (d) => (err += d));
  const exited = new Promise((r) => p.once('exit', r));
  t.teardown(async () => {
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM');
    await exited;
    if (err.includes('level=error')) t.comment(`node_exporter said:\n${err}`);
  });
}
type Tap = { teardown(fn: () => unknown): void; comment(...a: unknown[]): void };

/**
 * One consistent triple: a fresh sample (which writes the textfile before answering), then the
 * same sample from monitoring.get and traffic.get; retried while a background sample or a traffic
 * tick slipped in between.
 */
async function consistent(c: RpcClient): Promise<{ snap: MonitoringSnapshot; traffic: TrafficRow[] }> {
  for (let i = 0; ; i++) {
    const fresh = await c.call<MonitoringSnapshot>('monitoring.get', { fresh: true });
    const traffic = await c.call<TrafficRow[]>('traffic.get', {});
    const snap = await c.call<MonitoringSnapshot>('monitoring.get', {});
    const again = await c.call<TrafficRow[]>('traffic.get', {});
    if ((snap.sampledAt === fresh.sampledAt && JSON.stringify(traffic) === JSON.stringify(again)) || i === 5) return { snap, traffic };
  }
}

let fx: Awaited<ReturnType<typeof servicesFixture>>;
let promFile: string;
/** Traffic is sampled often, so that a page fetched shows up within a second. */
const config = (textfile: string) => ({ metrics: { textfile }, traffic: { sampleIntervalMs: 200 } });
const REMOTE_NS = 'metricsremote';
const WAN_IP = '198.51.100.1'; // TEST-NET-2: outside traffic.localSubnets, only inside the sandbox

/**
 * A remote host: a namespace one veth away from the sandbox's own, so that its requests to the
 * service cross the FORWARD chain, where smd counts service traffic.
 */
async function addRemoteHost(sb: Sandbox): Promise<void> {
  await sb.run('ip', ['netns', 'add', REMOTE_NS]);
  await sb.run('ip', ['link', 'add', 'mwan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', REMOTE_NS]);
  await sb.run('ip', ['addr', 'add', `${WAN_IP}/24`, 'dev', 'mwan0']);
  await sb.run('ip', ['link', 'set', 'mwan0', 'up']);
  await sb.run('ip', ['-n', REMOTE_NS, 'addr', 'add', '198.51.100.2/24', 'dev', 'eth0']);
  await sb.run('ip', ['-n', REMOTE_NS, 'link', 'set', 'eth0', 'up']);
  await sb.run('ip', ['-n', REMOTE_NS, 'link', 'set', 'lo', 'up']);
  await sb.run('ip', ['-n', REMOTE_NS, 'route', 'replace', 'default', 'via', WAN_IP]);
}

t.before(async () => {
  // The textfile directory exists before smd starts, as node_exporter's package makes it.
  const promDir = tempDir(t, 'smd-textfile-');
  chmodSync(promDir, 0o755);
  promFile = join(promDir, 'smd.prom');
  fx = await servicesFixture(t, { config: config(promFile) });
  startNodeExporter(t, fx.sb, promDir);
  await addRemoteHost(fx.sb);
});

/** Fetches the page from the remote host and waits (bounded) until the traffic monitor counted it as upload. */
async function pageCounted(c: RpcClient): Promise<void> {
  const out = async () => (await c.call<TrafficRow[]>('traffic.get', { serviceId: 'hello-http' })).find((r) => r.direction === 'out')?.bytes ?? 0;
  const before = await out();
  const { address } = await c.call<{ address: string }>('services.get', { id: 'hello-http' });
  const page = await fx.sb.run('ip', ['netns', 'exec', REMOTE_NS, process.execPath, join(ROOT, 'scripts/http-get.mjs'), `http://${address}:8080/`], { timeoutMs: 10_000 });
  if (!/version 1</.test(page)) throw new Error(`unexpected page from the service: ${page.slice(0, 200)}`);
  for (let i = 0; i < 100; i++) {
    if ((await out()) > before) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the page fetch was not counted within 10 s (upload stayed ${before})`);
}

t.test('node_exporter parses the textfile; the smd_* series match monitoring.get and traffic.get', async (t) => {
  const { sb, c } = fx;
  const op = await fx.install({ image: fx.img['hello-http-v1'] });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  await pageCounted(c);

  const { snap, traffic } = await consistent(c);
  t.ok(existsSync(promFile), 'smd wrote the textfile');
  const s = series((await scrape(sb)).last);
  t.equal(s.get('node_textfile_scrape_error'), 0, 'node_exporter parsed the file');
  t.equal(s.get(key('smd_monitoring_last_sample_timestamp_seconds')), snap.sampledAt! / 1000, 'the file is of that sample');
  t.equal(s.get(key('smd_build_info', { version: JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version, node: process.version })), 1);

  const web = snap.services.find((u) => u.serviceId === 'hello-http');
  t.ok(web, 'the service is in monitoring.get');
  t.equal(web!.activeState, 'active');
  const l = { service: 'hello-http' };
  t.equal(s.get(key('smd_service_active', l)), 1);
  t.equal(s.get(key('smd_service_memory_bytes', l)), web!.memory ?? undefined, `memory ${web!.memory}`);
  t.ok((web!.memory ?? 0) > 0, 'memory is known in the sandbox');
  t.equal(s.get(key('smd_service_tasks', l)), web!.tasks ?? undefined);
  t.equal(s.get(key('smd_service_restarts_total', l)), web!.restarts ?? undefined);
  t.equal(s.get(key('smd_service_storage_bytes', l)), web!.storage.usedBytes ?? undefined);
  if (web!.cpuUsageNs !== null) t.equal(s.get(key('smd_service_cpu_seconds_total', l)), web!.cpuUsageNs / 1e9);
  t.equal(s.get(key('smd_service_info', { ...l, version: '1', unit: 'smd-hello-http.service' })), 1);

  t.equal(traffic.length, 4, 'two system chains and two of the service');
  for (const r of traffic) {
    const name = r.serviceId ? 'smd_service_traffic_bytes_total' : 'smd_system_traffic_bytes_total';
    const labels = r.serviceId ? { service: r.serviceId, direction: r.direction } : { direction: r.direction };
    t.equal(s.get(key(name, labels)), r.bytes, `${r.chain}: ${r.bytes} bytes`);
  }
  t.ok(traffic.find((r) => r.serviceId === 'hello-http' && r.direction === 'out')!.bytes > 0, 'the pages went out');
  const rpc = [...s.keys()].filter((k) => k.startsWith('smd_rpc_requests_total'));
  // A request is counted once answered: the traffic.get calls before the last sample are in.
  t.ok(rpc.some((k) => k === key('smd_rpc_requests_total', { method: 'traffic.get', outcome: 'ok' })), `RPC requests counted: ${rpc.join(' ')}`);
  t.ok((s.get(key('smd_rpc_request_duration_seconds_count', { method: 'traffic.get' })) ?? 0) > 0, 'with latencies');
  t.equal(s.get(key('smd_rpc_request_duration_seconds_bucket', { method: 'traffic.get', le: '+Inf' })), s.get(key('smd_rpc_request_duration_seconds_count', { method: 'traffic.get' })));
  t.equal(s.get(key('smd_operations_total', { kind: 'services.install', state: 'succeeded' })), 1, 'the install is counted as an operation outcome');

  // metrics.get answers the same figures over the API.
  const m = await c.call<{ text: string; contentType: string; sampledAt: number }>('metrics.get', {});
  t.equal(m.contentType, 'text/plain; version=0.0.4; charset=utf-8');
  t.match(m.text, /^# HELP smd_build_info /);
  const printed = await execBounded(process.execPath, [SMCTL, '--socket', fx.d.readOnlySocket, 'metrics'], { timeoutMs: 20_000 });
  t.equal(printed.code, 0, printed.stderr);
  t.match(printed.stdout, /^# HELP smd_build_info .*\n# TYPE smd_build_info gauge\nsmd_build_info\{version="[^"]+",node="v[^"]+"\} 1\n/, 'smctl metrics prints the text');
  const ro = await fx.d.client(true);
  t.match((await ro.call<{ text: string }>('metrics.get', {})).text, /smd_service_memory_bytes\{service="hello-http"\}/, 'allowed on the read-only socket');
});

t.test('no scrape ever sees a half-written file: scrapes in a loop while smd writes', async (t) => {
  const sb = fx.sb;
  const c = fx.c;
  let writes = 0;
  let stop = false;
  // Every fresh sample writes the textfile (atomically) before it answers.
  const writer = (async () => {
    while (!stop) {
      await c.call('monitoring.get', { fresh: true });
      writes++;
    }
  })();
  const result = await scrape(sb, 150, 5).finally(() => (stop = true));
  await writer;
  const bad = result.scrapes.filter((x) => x.scrapeError !== 0 || x.smdLines === 0);
  t.equal(bad.length, 0, `every scrape parsed (${result.scrapes.length} scrapes, ${writes} writes); bad: ${JSON.stringify(bad.slice(0, 3))}`);
  const seen = new Set(result.scrapes.map((x) => x.sampledAt));
  t.ok(seen.size > 10, `the file changed during the scrapes: ${seen.size} different samples seen`);
  t.ok(writes > 20, `${writes} writes`);
});

t.test('traffic counters never go backwards across smd restarts (SIGTERM and kill -9)', async (t) => {
  const sb = fx.sb;
  const names = ['in', 'out'].map((direction) => key('smd_service_traffic_bytes_total', { service: 'hello-http', direction }));
  const read = async (c: RpcClient) => {
    await c.call('monitoring.get', { fresh: true });
    const s = series((await scrape(sb)).last);
    t.equal(s.get('node_textfile_scrape_error'), 0);
    return names.map((n) => s.get(n)!);
  };
  let d = fx.d;
  let c = fx.c;
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    await pageCounted(c);
    const before = await read(c);
    t.ok(before.every((v) => typeof v === 'number' && v > 0), `before ${signal}: ${before}`);
    await d.stop(signal);
    d = await startDaemon(t, { dir: d.dir, sandbox: sb, config: config(promFile) });
    c = await d.client();
    fx = { ...fx, d, c };
    const after = await read(c);
    for (let i = 0; i < 2; i++) t.ok(after[i]! >= before[i]!, `${names[i]} after ${signal}: ${before[i]} -> ${after[i]}`);
  }
  // RPC counts are honest: they started again at 0 with the new process.
  const m = series((await scrape(sb)).last);
  const installs = [...m.entries()].filter(([k]) => k.startsWith('smd_rpc_requests_total') && k.includes('services.install'));
  t.same(installs, [], 'the install requests of the first process are not counted by the new one');
});
