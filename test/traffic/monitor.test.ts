import t from 'tap';
import { NetworkManager, type ServiceNetwork } from '../../src/net/network.js';
import { TrafficMonitor, type TrafficRow } from '../../src/traffic/monitor.js';
import { serviceChain } from '../../src/traffic/naming.js';
import { trafficMethods } from '../../src/traffic/methods.js';
import { nextPeriodStart } from '../../src/traffic/period.js';
import { EventBus, type EventMap } from '../../src/events/bus.js';
import { AlertStore } from '../../src/alerts/store.js';
import { silentLogger } from '../../src/log.js';
import { startLab } from './fixtures/lab.js';

const KiB = 1024;
/** The measured total must cover the payload and stay within 5 % + 10 KiB of it. */
const within = (delta: number, size: number) => delta >= size && delta <= size * 1.05 + 10 * KiB;
const noLimits = { ulLimit: null, dlLimit: null, ulSpeed: null, dlSpeed: null };

t.test('traffic accounting, persistence, periods, limits, shaping and reconcile in a sandbox', async (t) => {
  const lab = await startLab(t, { period: 'day', persistIntervalMs: 3_600_000, sampleIntervalMs: 3_600_000 });
  const { sandbox, runner, opened } = lab;
  const db = opened.db;
  const net = new NetworkManager({ db, config: lab.config, logger: silentLogger, runner });
  await net.ensureBridge();
  const A = 'org.example.alpha';
  const B = 'org.example.beta';
  const a: ServiceNetwork = await net.ensureServiceNetwork(A);
  const b: ServiceNetwork = await net.ensureServiceNetwork(B);

  let clock = Date.UTC(2030, 0, 15, 12, 0, 0);
  const bus = new EventBus();
  const events: EventMap['traffic'][] = [];
  const alerts: EventMap['alert'][] = [];
  bus.subscribe('traffic', (e) => events.push(e));
  bus.subscribe('alert', (e) => alerts.push(e));
  const alertStore = new AlertStore({ db, bus });
  const newMonitor = () => new TrafficMonitor({ db, bus, alerts: alertStore, config: lab.config, logger: silentLogger, now: () => clock, runner });
  let mon = newMonitor();
  await mon.start();
  t.ok(mon.health().ok, mon.health().detail);
  await mon.addService(A, a.address, { ...noLimits, hostVeth: a.hostVeth, netnsName: a.netnsName });
  await mon.addService(B, b.address, { ...noLimits, hostVeth: b.hostVeth, netnsName: b.netnsName });
  const save = await sandbox.run('iptables-save', ['-t', 'filter']);
  for (const c of [serviceChain(A, 'in'), serviceChain(A, 'out'), 'SMD_SYSTEM_IN', 'SMD_SYSTEM_OUT']) t.match(save, `:${c} `, `chain ${c} exists`);
  t.match(save, '-A FORWARD -j SMD_FORWARD_IN');
  t.match(save, `-A SMD_FORWARD_IN -d ${a.address}/32 -j ${serviceChain(A, 'in')}`);
  t.notMatch(save, /-A SMD_[0-9A-F]{12}_(IN|OUT) .*-j RETURN/, 'no local-subnet rules in service chains');

  const bytesOf = (m: TrafficMonitor, id: string, dir: 'in' | 'out') => m.get(id).find((r) => r.direction === dir)!.bytes;
  const snap = (m: TrafficMonitor) => ({ aIn: bytesOf(m, A, 'in'), aOut: bytesOf(m, A, 'out'), bIn: bytesOf(m, B, 'in'), bOut: bytesOf(m, B, 'out') });

  await t.test('download and upload are counted per service and direction', async (t) => {
    await mon.sampleNow();
    const s0 = snap(mon);
    const size = 1024 * KiB;
    const dl = await lab.download(a.netnsName, size);
    t.equal(dl.code, 0, dl.stderr);
    await mon.sampleNow();
    const s1 = snap(mon);
    t.ok(within(s1.aIn - s0.aIn, size), `download counted: ${s1.aIn - s0.aIn} for ${size}`);
    t.ok(s1.aOut - s0.aOut < 0.05 * size, `the request and ACKs are small upload: ${s1.aOut - s0.aOut}`);
    t.equal(s1.bIn, s0.bIn, "one service's traffic never shows in another's chain");
    t.equal(s1.bOut, s0.bOut);

    const up = 512 * KiB;
    const ul = await lab.upload(b.netnsName, up);
    t.equal(ul.code, 0, ul.stderr);
    t.equal(ul.bytes, up, 'the remote received it all');
    await mon.sampleNow();
    const s2 = snap(mon);
    t.ok(within(s2.bOut - s1.bOut, up), `upload counted: ${s2.bOut - s1.bOut} for ${up}`);
    t.equal(s2.aOut, s1.aOut, "B's upload is not A's");
    t.equal(s2.aIn, s1.aIn);

    const last = events.at(-1)!.samples as TrafficRow[];
    t.ok(last.some((r) => r.chain === 'SMD_SYSTEM_IN' && r.serviceId === null), 'a traffic event at each sample, with the system chains');
    const rows = (await trafficMethods(mon)[0]!.handler({ serviceId: A }, { readOnly: true })) as TrafficRow[];
    t.same(rows.map((r) => [r.serviceId, r.direction, r.limit, r.blocked]), [
      [A, 'in', null, false],
      [A, 'out', null, false],
    ]);
  });

  await t.test('a restart continues from the stored totals; a counter reset never goes backwards', async (t) => {
    await mon.sampleNow();
    const before = snap(mon);
    await mon.stop();
    const stored = opened.sqlite.prepare('SELECT chain, value, serviceId, direction FROM trafficmonitor ORDER BY chain').all() as { chain: string; value: number }[];
    t.equal(stored.length, 6, 'all chains persisted in one go');
    t.equal(stored.find((r) => r.chain === serviceChain(A, 'in'))!.value, before.aIn);

    mon = newMonitor();
    await mon.start();
    await mon.addService(A, a.address, { ...noLimits, hostVeth: a.hostVeth, netnsName: a.netnsName });
    await mon.addService(B, b.address, { ...noLimits, hostVeth: b.hostVeth, netnsName: b.netnsName });
    t.same(snap(mon), before, 'continues from the stored values');

    // Someone flushes and zeroes our chains behind our back.
    await sandbox.run('iptables', ['-w', '-F', serviceChain(A, 'in')]);
    await sandbox.run('iptables', ['-w', '-Z']);
    await mon.sampleNow();
    t.same(snap(mon), before, 'no step backwards after a reset');
    t.match(await sandbox.run('iptables-save', ['-t', 'filter']), `-A ${serviceChain(A, 'in')} -d ${a.address}/32`, 'the flushed chain was rebuilt');
    const size = 256 * KiB;
    t.equal((await lab.download(a.netnsName, size)).code, 0);
    await mon.sampleNow();
    t.ok(within(bytesOf(mon, A, 'in') - before.aIn, size), 'counting goes on from the total');
  });

  await t.test('a new period starts the totals at 0', async (t) => {
    const oldStart = mon.get(A)[0]!.periodStart;
    clock = nextPeriodStart(clock, 'day') + 1000;
    await mon.sampleNow();
    t.same(snap(mon), { aIn: 0, aOut: 0, bIn: 0, bOut: 0 });
    t.ok(mon.get(A)[0]!.periodStart > oldStart);
    const size = 128 * KiB;
    t.equal((await lab.download(a.netnsName, size)).code, 0);
    await mon.sampleNow();
    t.ok(within(bytesOf(mon, A, 'in'), size), 'and counts again');
    // A restart into a later period ignores the stored older period.
    mon.persistNow();
    await mon.stop();
    clock = nextPeriodStart(clock, 'day') + 1000;
    mon = newMonitor();
    await mon.start();
    await mon.addService(A, a.address, { ...noLimits, hostVeth: a.hostVeth, netnsName: a.netnsName });
    await mon.addService(B, b.address, { ...noLimits, hostVeth: b.hostVeth, netnsName: b.netnsName });
    t.equal(bytesOf(mon, A, 'in'), 0, 'a stored older period starts at 0');
  });

  await t.test('a download limit blocks downloads until the next period, with one alert', async (t) => {
    await mon.sampleNow();
    const alertsBefore = alerts.length;
    await mon.updateLimits(A, { dlLimit: 300 * KiB });
    t.equal((await lab.download(a.netnsName, 512 * KiB)).code, 0, 'below the limit when it started');
    await mon.sampleNow();
    const row = mon.get(A).find((r) => r.direction === 'in')!;
    t.ok(row.blocked, 'passed the limit: blocked');
    t.equal(row.limit, 300 * KiB);
    t.equal(alerts.length, alertsBefore + 1, 'one alert event');
    t.equal(alerts.at(-1)!.kind, 'traffic.limit');
    t.equal(alerts.at(-1)!.serviceId, A);
    const blockedTotal = row.bytes;
    const denied = await lab.download(a.netnsName, 64 * KiB, 2_000);
    t.not(denied.code, 0, 'a download while blocked fails');
    const rules = await sandbox.run('iptables-save', ['-t', 'filter']);
    t.match(rules, `-A ${serviceChain(A, 'in')} -d ${a.address}/32 -j DROP`, 'download dropped');
    t.notMatch(rules, `-A ${serviceChain(A, 'out')} -s ${a.address}/32 -j DROP`, 'upload not dropped');
    await mon.sampleNow();
    t.equal(alerts.length, alertsBefore + 1, 'no second alert for the same crossing');
    t.ok(bytesOf(mon, A, 'in') <= blockedTotal + 2 * KiB, 'dropped traffic is not counted');
    const rows = opened.sqlite.prepare("SELECT serviceId, kind FROM alerts WHERE source = 'traffic'").all();
    t.same(rows, [{ serviceId: A, kind: 'traffic.limit' }], 'an alert row');
    t.equal((await lab.download(b.netnsName, 64 * KiB)).code, 0, 'other services are not blocked');

    clock = nextPeriodStart(clock, 'day') + 1000;
    await mon.sampleNow();
    t.notOk(mon.get(A).find((r) => r.direction === 'in')!.blocked, 'the next period lifts the block');
    t.equal((await lab.download(a.netnsName, 64 * KiB)).code, 0, 'downloads work again');
    await mon.updateLimits(A, { dlLimit: null });
  });

  await t.test('speed limits shape download and upload within 20 %', async (t) => {
    const rate = 400_000;
    await mon.updateLimits(A, { dlSpeed: rate, ulSpeed: rate });
    const size = 1_200_000;
    const dl = await lab.download(a.netnsName, size, 30_000);
    t.equal(dl.code, 0, dl.stderr);
    const dlRate = size / dl.seconds;
    t.ok(Math.abs(dlRate - rate) <= 0.2 * rate, `download at ${Math.round(dlRate)} B/s for a limit of ${rate}`);
    const ul = await lab.upload(a.netnsName, size, 30_000);
    t.equal(ul.code, 0, ul.stderr);
    const ulRate = size / ul.seconds;
    t.ok(Math.abs(ulRate - rate) <= 0.2 * rate, `upload at ${Math.round(ulRate)} B/s for a limit of ${rate}`);
    await mon.updateLimits(A, { dlSpeed: null, ulSpeed: null });
    const fast = await lab.download(a.netnsName, size);
    t.ok(size / fast.seconds > 2 * rate, `unshaped again: ${Math.round(size / fast.seconds)} B/s`);
  });

  await t.test('reconcile removes chains, rows and networks of services that no longer exist', async (t) => {
    await mon.persistNow();
    const r = await mon.reconcile(new Set([A]));
    t.same(r.removed, [serviceChain(B, 'in'), serviceChain(B, 'out')].sort());
    const save = await sandbox.run('iptables-save', ['-t', 'filter']);
    t.notMatch(save, serviceChain(B, 'in'));
    t.notMatch(save, serviceChain(B, 'out'));
    t.match(save, serviceChain(A, 'in'));
    t.same(mon.get(B), []);
    const chains = (opened.sqlite.prepare('SELECT chain FROM trafficmonitor ORDER BY chain').all() as { chain: string }[]).map((x) => x.chain);
    t.notOk(chains.includes(serviceChain(B, 'in')), 'rows of removed services are deleted');
    const n = await net.reconcile(new Set([A]));
    t.same(n.removed, [B]);
    t.notMatch(await sandbox.run('ip', ['netns', 'list']), b.netnsName);

    await mon.removeService(A);
    t.notMatch(await sandbox.run('iptables-save', ['-t', 'filter']), serviceChain(A, 'in'), 'removeService deletes the chains');
    await mon.stop();
  });

  await t.test('without iptables health is not ok and the rest keeps working', async (t) => {
    const broken = new TrafficMonitor({
      db,
      bus,
      alerts: alertStore,
      config: lab.config,
      logger: silentLogger,
      now: () => clock,
      runner,
      binaries: { save: '/nonexistent/iptables-save', restore: '/nonexistent/iptables-restore' },
    });
    await broken.start();
    t.notOk(broken.health().ok);
    t.match(broken.health().detail, /iptables unavailable/);
    await broken.addService('c', '172.30.0.9', noLimits);
    await broken.sampleNow();
    t.same(
      broken.get('c').map((r) => [r.direction, r.bytes]),
      [
        ['in', 0],
        ['out', 0],
      ],
      'get answers',
    );
    await broken.updateLimits('c', { dlLimit: 5 });
    await broken.removeService('c');
    await broken.stop();
  });
});
