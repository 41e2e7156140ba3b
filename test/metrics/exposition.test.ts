/** The exposition writer and the in-memory counters (pure), the alert counts on a real SQLite file. */
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig } from '../../src/config/config.js';
import { openDatabase } from '../../src/db/database.js';
import { alerts as alertsTable } from '../../src/db/schema.js';
import { EventBus } from '../../src/events/bus.js';
import { silentLogger } from '../../src/log.js';
import { AlertCounts } from '../../src/metrics/alert-counts.js';
import { buildExposition, type ExpositionInput } from '../../src/metrics/collector.js';
import { OperationStats, RPC_BUCKETS, RpcStats } from '../../src/metrics/counters.js';
import { escapeHelp, escapeLabelValue, Exposition, formatLabels, formatValue } from '../../src/metrics/exposition.js';
import { TextfileWriter } from '../../src/metrics/textfile.js';
import type { MonitoringSnapshot, ServiceUsage } from '../../src/monitoring/monitor.js';
import { tempDir } from '../helpers/daemon.js';

t.test('label values escape backslash, double quote and line feed; nothing else', async (t) => {
  t.equal(escapeLabelValue('plain-id_1.2'), 'plain-id_1.2');
  t.equal(escapeLabelValue('a\\b'), 'a\\\\b');
  t.equal(escapeLabelValue('say "hi"'), 'say \\"hi\\"');
  t.equal(escapeLabelValue('two\nlines'), 'two\\nlines');
  t.equal(escapeLabelValue('\\"\n'), '\\\\\\"\\n');
  t.equal(escapeLabelValue('tab\there, ünïcode, {braces}=,'), 'tab\there, ünïcode, {braces}=,', 'tabs, UTF-8 and punctuation stay as they are');
  t.equal(formatLabels({ service: 'x"y', direction: 'in' }), '{service="x\\"y",direction="in"}');
  t.equal(formatLabels({}), '');
  t.equal(formatLabels(undefined), '');
});

t.test('HELP escapes backslash and line feed, but not double quotes', async (t) => {
  t.equal(escapeHelp('C:\\path\nnext "quoted"'), 'C:\\\\path\\nnext "quoted"');
  const x = new Exposition();
  x.family('m_total', 'counter', 'a\\b\nc').sample(undefined, 1);
  t.equal(x.text(), '# HELP m_total a\\\\b\\nc\n# TYPE m_total counter\nm_total 1\n');
});

t.test('values, names, families without samples, unknown values left out', async (t) => {
  t.equal(formatValue(42), '42');
  t.equal(formatValue(0.25), '0.25');
  t.equal(formatValue(NaN), 'NaN');
  t.equal(formatValue(Infinity), '+Inf');
  t.equal(formatValue(-Infinity), '-Inf');
  t.equal(formatValue(2 ** 53 + 2), '9007199254740994');
  t.equal(formatValue(1e21), '1e+21', 'Go parses the exponent form');
  const x = new Exposition();
  x.family('empty', 'gauge', 'no samples');
  x.family('g', 'gauge', 'gauge').sample({ a: '1' }, null).sample({ a: '2' }, undefined).sample({ a: '3' }, 0);
  t.equal(x.text(), '# HELP g gauge\n# TYPE g gauge\ng{a="3"} 0\n', 'an empty family and unknown values are not written');
  t.throws(() => x.family('g', 'gauge', 'again'), /declared twice/);
  t.throws(() => x.family('bad-name', 'gauge', ''), /invalid metric name/);
  t.throws(() => x.family('ok', 'gauge', '').sample({ 'bad-label': 'v' }, 1), /invalid label name/);
  t.throws(() => new Exposition().family('ok', 'gauge', '').sample({ __reserved: 'v' }, 1), /invalid label name/);
});

t.test('histogram: cumulative buckets, +Inf equals _count, _sum', async (t) => {
  const x = new Exposition();
  x.family('h_seconds', 'histogram', 'h').histogram({ method: 'm' }, [0.1, 1], [2, 0, 3], 7.5);
  t.equal(
    x.text(),
    [
      '# HELP h_seconds h',
      '# TYPE h_seconds histogram',
      'h_seconds_bucket{method="m",le="0.1"} 2',
      'h_seconds_bucket{method="m",le="1"} 2',
      'h_seconds_bucket{method="m",le="+Inf"} 5',
      'h_seconds_sum{method="m"} 7.5',
      'h_seconds_count{method="m"} 5',
      '',
    ].join('\n'),
  );
  t.throws(() => new Exposition().family('g', 'gauge', '').histogram(undefined, [1], [0, 0], 0), /not a histogram/);
});

t.test('RPC stats: outcomes per method, buckets by upper bound, unknown methods under one label', async (t) => {
  const s = new RpcStats();
  s.observe('services.list', 'ok', 0.0005); // on the bound: in that bucket (le is <=)
  s.observe('services.list', 'ok', 0.003);
  s.observe('services.list', 'NOT_FOUND', 1000);
  s.observe(null, 'METHOD_NOT_FOUND', 0);
  const [other, list] = s.entries();
  t.equal(other![0], 'other');
  t.equal(list![0], 'services.list');
  t.same([...list![1].outcomes], [['ok', 2], ['NOT_FOUND', 1]]);
  t.equal(list![1].buckets.length, RPC_BUCKETS.length + 1);
  t.equal(list![1].buckets[0], 1);
  t.equal(list![1].buckets[RPC_BUCKETS.indexOf(0.005)], 1);
  t.equal(list![1].buckets[RPC_BUCKETS.length], 1, 'above the last bound');
  t.equal(list![1].sumSeconds, 1000.0035);
});

t.test('operation stats count each finished operation once, and what is under way', async (t) => {
  const bus = new EventBus(silentLogger);
  const s = new OperationStats().listen(bus);
  const ev = (id: string, kind: string, state: string) => bus.publish('operation', { id, kind, state, target: null, progress: 0, step: null, error: null });
  ev('a', 'services.install', 'running');
  ev('b', 'services.install', 'pending');
  ev('c', 'layers.prune', 'running');
  t.same(s.inProgress(), [
    { kind: 'layers.prune', state: 'running', count: 1 },
    { kind: 'services.install', state: 'pending', count: 1 },
    { kind: 'services.install', state: 'running', count: 1 },
  ]);
  ev('a', 'services.install', 'succeeded');
  ev('a', 'services.install', 'succeeded'); // a repeated event of a finished operation
  ev('b', 'services.install', 'running');
  ev('b', 'services.install', 'failed');
  ev('c', 'layers.prune', 'failed');
  ev('d', 'services.remove', 'failed'); // failed at start-up (interrupted): never seen running
  t.same(s.finishedCounts(), [
    { kind: 'layers.prune', state: 'failed', count: 1 },
    { kind: 'services.install', state: 'failed', count: 1 },
    { kind: 'services.install', state: 'succeeded', count: 1 },
    { kind: 'services.remove', state: 'failed', count: 1 },
  ]);
  t.same(s.inProgress(), []);
  s.close();
  ev('e', 'layers.prune', 'failed');
  t.equal(s.finishedCounts().length, 4, 'closed: no longer listening');
});

t.test('alert counts come from the alerts table and carry on across a new reader (a restart)', async (t) => {
  const dir = tempDir(t);
  const { db, close } = openDatabase(join(dir, 'smd.db'));
  t.teardown(close);
  const add = (serviceId: string | null, source: string, kind: string) => db.insert(alertsTable).values({ time: Date.now(), source, serviceId, kind, message: 'm' }).run();
  add('a', 'monitoring', 'rule.memory');
  add('a', 'monitoring', 'rule.memory');
  add(null, 'journal', 'journal.err');
  const counts = new AlertCounts(db);
  t.same(counts.read(), [
    { serviceId: null, source: 'journal', kind: 'journal.err', count: 1 },
    { serviceId: 'a', source: 'monitoring', kind: 'rule.memory', count: 2 },
  ]);
  add('a', 'monitoring', 'rule.memory');
  add('b', 'traffic', 'traffic.limit');
  t.same(
    counts.read().map((c) => c.count),
    [1, 3, 1],
    'only new rows are added',
  );
  t.same(new AlertCounts(db).read(), counts.read(), 'a fresh reader (smd restarted) starts from the stored total');
});

function usage(id: string, over: Partial<ServiceUsage> = {}): ServiceUsage {
  return {
    serviceId: id,
    unit: `smd-${id}.service`,
    activeState: 'active',
    memory: 1024,
    tasks: 3,
    restarts: 2,
    cpu: 1.5,
    cpuUsageNs: 2_500_000_000,
    storage: { folder: '/s', usedBytes: 4096, limitBytes: 1 << 20, exact: true, source: 'du' },
    state: { file: '/s/state', usedBytes: 7, limitBytes: null },
    upload: 10,
    download: 20,
    rulesError: null,
    ...over,
  };
}

export function sampleInput(services: ServiceUsage[]): ExpositionInput {
  const snapshot: MonitoringSnapshot = { sampledAt: 1_700_000_000_000, intervalMs: 10_000, cost: { systemdMs: 1.5, totalMs: 12.25, units: services.length }, systemdError: null, device: { cpu: null, cpuCount: null, memory: null, disk: null }, services };
  const rpc = new RpcStats();
  rpc.observe('metrics.get', 'ok', 0.002);
  return {
    build: { version: '0.1.0', node: 'v20.20.0', startedAt: 1_699_999_990_000 },
    snapshot,
    versions: new Map(services.map((s) => [s.serviceId, 3])),
    traffic: [
      { chain: 'SMD_SYSTEM_IN', serviceId: null, direction: 'in', bytes: 500, limit: null, blocked: false, periodStart: 1_699_920_000_000 },
      ...services.flatMap((s) => [
        { chain: `C_${s.serviceId}_IN`, serviceId: s.serviceId, direction: 'in' as const, bytes: 20, limit: 1000, blocked: false, periodStart: 1_699_920_000_000 },
        { chain: `C_${s.serviceId}_OUT`, serviceId: s.serviceId, direction: 'out' as const, bytes: 10, limit: null, blocked: true, periodStart: 1_699_920_000_000 },
      ]),
    ],
    alerts: [{ serviceId: services[0]?.serviceId ?? null, source: 'monitoring', kind: 'rule.memory', count: 2 }],
    operations: { finished: [{ kind: 'services.install', state: 'succeeded', count: 1 }], inProgress: [] },
    rpc: rpc.entries(),
  };
}

t.test('the whole exposition: names, labels, base units, one HELP and TYPE per family', async (t) => {
  const text = buildExposition(sampleInput([usage('web'), usage('idle', { activeState: 'inactive', memory: 0, tasks: 0, cpuUsageNs: null, restarts: null })]));
  const lines = text.split('\n');
  t.ok(text.endsWith('\n'));
  for (const l of ['smd_build_info{version="0.1.0",node="v20.20.0"} 1', 'smd_start_time_seconds 1699999990', 'smd_monitoring_sample_duration_seconds 0.01225', 'smd_monitoring_last_sample_timestamp_seconds 1700000000']) t.ok(lines.includes(l), l);
  for (const l of [
    'smd_service_info{service="web",version="3",unit="smd-web.service"} 1',
    'smd_service_active{service="web"} 1',
    'smd_service_active{service="idle"} 0',
    'smd_service_memory_bytes{service="web"} 1024',
    'smd_service_cpu_seconds_total{service="web"} 2.5',
    'smd_service_tasks{service="web"} 3',
    'smd_service_restarts_total{service="web"} 2',
    'smd_service_storage_bytes{service="web"} 4096',
    'smd_service_storage_limit_bytes{service="web"} 1048576',
    'smd_service_state_bytes{service="web"} 7',
    'smd_service_traffic_bytes_total{service="web",direction="in"} 20',
    'smd_service_traffic_bytes_total{service="web",direction="out"} 10',
    'smd_service_traffic_limit_bytes{service="web",direction="in"} 1000',
    'smd_service_traffic_blocked{service="web",direction="out"} 1',
    'smd_system_traffic_bytes_total{direction="in"} 500',
    'smd_traffic_period_start_timestamp_seconds 1699920000',
    'smd_alerts_total{service="web",source="monitoring",kind="rule.memory"} 2',
    'smd_operations_total{kind="services.install",state="succeeded"} 1',
    'smd_rpc_requests_total{method="metrics.get",outcome="ok"} 1',
    'smd_rpc_request_duration_seconds_bucket{method="metrics.get",le="0.0025"} 1',
    'smd_rpc_request_duration_seconds_count{method="metrics.get"} 1',
  ])
    t.ok(lines.includes(l), l);
  t.notOk(lines.some((l) => l.startsWith('smd_service_cpu_seconds_total{service="idle"}')), 'unknown CPU time is left out, not 0');
  t.notOk(lines.some((l) => l.startsWith('smd_service_traffic_limit_bytes{service="web",direction="out"}')), 'no limit, no series');
  const types = lines.filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2]!);
  t.equal(new Set(types).size, types.length, 'each family once');
  t.equal(lines.filter((l) => l.startsWith('# HELP ')).length, types.length, 'a HELP for each TYPE');
  for (const name of types) {
    const type = lines.find((l) => l.startsWith(`# TYPE ${name} `))!.split(' ')[3];
    if (type === 'counter') t.ok(name.endsWith('_total'), `${name}: counters end in _total`);
  }
  // Every sample line belongs to the family declared last before it (families are consecutive).
  let current = '';
  for (const l of lines) {
    if (l.startsWith('# TYPE ')) current = l.split(' ')[2]!;
    else if (l && !l.startsWith('#')) t.ok(l.startsWith(current), `${l.slice(0, 60)} is in ${current}`);
  }
});

t.test('a hostile service id is escaped and stays on its line', async (t) => {
  const text = buildExposition(sampleInput([usage('a"b\\c\nd')]));
  t.ok(text.includes('smd_service_memory_bytes{service="a\\"b\\\\c\\nd"} 1024'));
  t.notOk(text.split('\n').some((l) => l === 'd"} 1024'), 'no line break inside a label value');
});

t.test('the textfile is replaced atomically, writes coalesce, failures are survived', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'smd.prom');
  const w = new TextfileWriter(path, silentLogger);
  await Promise.all([w.write('a 1\n'), w.write('a 2\n'), w.write('a 3\n')]);
  t.equal(readFileSync(path, 'utf8'), 'a 3\n', 'the newest text wins');
  t.ok(w.stats().writes <= 2, `writes coalesced: ${w.stats().writes}`);
  t.same(readdirSync(dir), ['smd.prom'], 'no temp file left');
  const bad = new TextfileWriter(join(dir, 'missing', 'smd.prom'), silentLogger);
  await bad.write('x 1\n');
  t.equal(bad.stats().failures, 1);
  t.match(bad.stats().lastError, /ENOENT/);
});

t.test('metrics.textfile must be an absolute *.prom path', async (t) => {
  t.equal(parseConfig({}).metrics.textfile, undefined);
  t.equal(parseConfig({ metrics: { textfile: '/var/lib/node-exporter/smd.prom' } }).metrics.textfile, '/var/lib/node-exporter/smd.prom');
  t.throws(() => parseConfig({ metrics: { textfile: '/var/lib/node-exporter/smd.txt' } }), /metrics\.textfile.*\.prom/);
  t.throws(() => parseConfig({ metrics: { textfile: 'smd.prom' } }), /absolute/);
  t.throws(() => parseConfig({ metrics: { port: 9100 } }), /unknown key "metrics.port"/);
});
