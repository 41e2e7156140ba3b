/**
 * Monitoring against a real systemd user manager in a sandbox: units started over D-Bus, numbers
 * read from systemd and the units' cgroups, alert rules raising alerts into a real SQLite file.
 * Samples are taken with sampleNow() on a fake clock (forMs), so no wall-clock sleeps stand in for
 * states; memory phases are driven by a flag file the unit polls.
 */
import t from 'tap';
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AlertStore } from '../../src/alerts/store.js';
import { openDatabase } from '../../src/db/database.js';
import { services, users } from '../../src/db/schema.js';
import { EventBus } from '../../src/events/bus.js';
import { silentLogger } from '../../src/log.js';
import { monitoringMethods } from '../../src/monitoring/methods.js';
import { Monitor, type ServiceUsage } from '../../src/monitoring/monitor.js';
import { SystemdManager } from '../../src/systemd/index.js';
import { tempDir } from '../helpers/daemon.js';
import { startSandbox, type Sandbox } from '../helpers/sandbox.js';

const MB = 1024 * 1024;
let sb: Sandbox;
let sd: SystemdManager;

t.before(async () => {
  sb = await startSandbox(t);
  sd = new SystemdManager({ bus: sb.bus, unitDir: sb.unitDir, logger: silentLogger });
  await sd.connect();
  t.teardown(() => sd.close());
});

function unitText(script: string): string {
  return `[Unit]\nDescription=monitoring test\n[Service]\nType=exec\nExecStart=/bin/sh -c '${script}'\n`;
}

/** Samples (advancing the fake clock by `stepMs` each time) until `pred` holds, at most `max` samples. */
async function sampleUntil(m: Monitor, clock: { now: number }, id: string, pred: (u: ServiceUsage) => boolean, what: string, stepMs = 100, max = 200): Promise<ServiceUsage> {
  let last: ServiceUsage | undefined;
  for (let i = 0; i < max; i++) {
    clock.now += stepMs;
    await m.sampleNow();
    last = m.get(id).services[0];
    if (last && pred(last)) return last;
    await new Promise((r) => setTimeout(r, 20)); // let the unit run between samples
  }
  throw new Error(`no sample with ${what} after ${max} samples; last: ${JSON.stringify(last)}`);
}

t.test('memory above a threshold for forMs raises one alert; another only after re-arming', async (t) => {
  const dir = tempDir(t);
  chmodSync(dir, 0o755);
  const { db, close } = openDatabase(join(dir, 'smd.db'));
  t.teardown(close);
  const flag = join(dir, 'high');
  const storage = join(dir, 'storage', 'data');
  mkdirSync(storage, { recursive: true });
  writeFileSync(join(storage, 'blob'), Buffer.alloc(200_000, 7));
  writeFileSync(join(dir, 'storage', 'state'), '{"k":1}');
  const unit = 'smd-memhog.service';
  // Holds ~40 MB in a shell variable while the flag exists, frees it when it is gone.
  const script = `while :; do if [ -e ${flag} ]; then [ -n "$x" ] || x=$(head -c 40000000 /dev/zero | tr "\\\\0" a); else x=; fi; sleep 0.05; done`;
  await sd.writeUnit(unit, unitText(script));
  await sd.startUnit(unit);
  t.teardown(() => sd.stopUnit(unit).catch(() => undefined));
  const now = Date.now();
  const rules = [{ metric: 'memory', above: 20 * MB, forMs: 1000, rearmBelow: 10 * MB }];
  db.insert(services).values({ id: 'memhog', version: 1, unit, alertRules: JSON.stringify(rules), storageLimit: 10 * MB, stateLimit: 1000, createdAt: now, updatedAt: now }).run();
  db.insert(users).values({ users: '[]', serviceid: 'memhog', storageFolder: storage, createdAt: now, updatedAt: now }).run();

  const bus = new EventBus();
  const events: { serviceId: string | null; kind: string; message: string }[] = [];
  bus.subscribe('alert', (a) => events.push(a));
  const alerts = new AlertStore({ db, bus });
  const clock = { now: 1_000_000 };
  const m = new Monitor({ db, systemd: sd, logger: silentLogger, dataDir: dir, alerts, intervalMs: 60_000, now: () => clock.now });

  const low = await sampleUntil(m, clock, 'memhog', (u) => u.memory !== null && u.memory > 0 && u.tasks !== null, 'memory and tasks known');
  t.equal(low.activeState, 'active');
  t.ok(low.memory! < 10 * MB, `starts low: ${low.memory}`);
  t.ok(low.storage.usedBytes! >= 200_000, `storage ${low.storage.usedBytes}`);
  t.match(low.storage, { folder: storage, limitBytes: 10 * MB, source: 'du', exact: true });
  t.match(low.state, { usedBytes: 7, limitBytes: 1000 });
  t.equal(low.rulesError, null);
  const snap = m.get();
  t.ok(snap.device.memory && snap.device.memory.totalBytes > 0, 'device memory');
  t.ok(snap.device.disk && snap.device.disk.totalBytes > 0, 'device disk');
  t.equal(snap.cost.units, 1);
  t.type(snap.cost.systemdMs, 'number');

  writeFileSync(flag, '');
  const high = await sampleUntil(m, clock, 'memhog', (u) => (u.memory ?? 0) > 20 * MB, 'memory above 20 MB');
  t.equal(events.length, 0, 'not yet: the value must stay above for forMs');
  // Still above for 1 s of (fake) time: exactly one alert.
  await sampleUntil(m, clock, 'memhog', () => events.length > 0, 'the first alert', 250, 10);
  t.ok(high.memory! > 20 * MB);
  for (let i = 0; i < 5; i++) {
    clock.now += 1000;
    await m.sampleNow();
  }
  t.equal(events.length, 1, 'one alert per crossing');
  t.match(events[0], { serviceId: 'memhog', kind: 'rule.memory', message: /memhog: memory \d+ bytes above 20971520 bytes for \d+ s/ });
  const stored = alerts.list({ serviceId: 'memhog' });
  t.equal(stored.length, 1);
  t.match(stored[0], { source: 'monitoring', kind: 'rule.memory', payload: { rule: { metric: 'memory', above: 20 * MB }, value: Number } });

  rmSync(flag);
  await sampleUntil(m, clock, 'memhog', (u) => u.memory !== null && u.memory < 10 * MB, 'memory below 10 MB (re-armed)');
  t.equal(events.length, 1, 're-arming does not alert');
  writeFileSync(flag, '');
  await sampleUntil(m, clock, 'memhog', (u) => (u.memory ?? 0) > 20 * MB, 'memory above 20 MB again');
  await sampleUntil(m, clock, 'memhog', () => events.length > 1, 'the second alert', 250, 10);
  t.equal(events.length, 2, 'a second crossing, a second alert');
  t.equal(alerts.list({ serviceId: 'memhog' }).length, 2);
  rmSync(flag);

  // The RPC method answers from the last sample and knows unknown services.
  const [method] = monitoringMethods(m);
  const answer = await method!.handler(method!.params.parse({ serviceId: 'memhog' }), { readOnly: true });
  t.equal(answer.services[0].serviceId, 'memhog');
  await t.rejects(Promise.resolve().then(() => method!.handler(method!.params.parse({ serviceId: 'nope' }), { readOnly: true })), { code: 'NOT_FOUND' });
});

t.test('cpu from the cgroup; a stopped unit reads zero; the interval loop samples on its own', async (t) => {
  const dir = tempDir(t);
  const { db, close } = openDatabase(join(dir, 'smd.db'));
  t.teardown(close);
  const unit = 'smd-spin.service';
  await sd.writeUnit(unit, unitText('while :; do :; done'));
  await sd.startUnit(unit);
  t.teardown(() => sd.stopUnit(unit).catch(() => undefined));
  const now = Date.now();
  db.insert(services).values({ id: 'spin', version: 1, unit, alertRules: '[{"metric":"bogus"}]', createdAt: now, updatedAt: now }).run();
  db.insert(services).values({ id: 'never', version: 1, unit: 'smd-never.service', createdAt: now, updatedAt: now }).run();
  const m = new Monitor({ db, systemd: sd, logger: silentLogger, dataDir: dir, intervalMs: 100 });
  await m.sampleNow();
  // Real time between two samples for a CPU percentage.
  let spin: ServiceUsage | undefined;
  for (let i = 0; i < 50 && !(spin?.cpu && spin.cpu > 20); i++) {
    await new Promise((r) => setTimeout(r, 100));
    await m.sampleNow();
    spin = m.get('spin').services[0];
  }
  t.ok(spin!.cpu! > 20, `a busy loop uses CPU: ${spin!.cpu}%`);
  t.ok(spin!.cpuUsageNs! > 0);
  t.match(spin!.rulesError, /metric/, 'bad rules are reported, not fatal');
  const never = m.get('never').services[0]!;
  t.match(never, { activeState: 'inactive', memory: 0, tasks: 0, cpu: 0, storage: { folder: null, usedBytes: null } });
  await sd.stopUnit(unit);
  await m.sampleNow();
  t.match(m.get('spin').services[0], { activeState: 'inactive', cpu: 0, memory: 0 });

  const before = m.get().sampledAt!;
  m.start();
  t.teardown(() => m.stop());
  for (let i = 0; i < 100 && (m.get().sampledAt ?? 0) <= before; i++) await new Promise((r) => setTimeout(r, 20));
  t.ok(m.get().sampledAt! > before, 'sampled by the loop');
  await m.stop();
  t.ok(m.get().device.cpu !== null, 'device CPU from /proc/stat deltas');
});

t.test('device CPU: samples within one clock tick keep the last figure and the older base', async (t) => {
  const dir = tempDir(t);
  const { db, close } = openDatabase(join(dir, 'smd.db'));
  t.teardown(close);
  const proc = join(dir, 'proc');
  mkdirSync(proc);
  // user nice system idle iowait irq softirq steal
  const stat = (busy: number, idle: number) => writeFileSync(join(proc, 'stat'), `cpu  ${busy} 0 0 ${idle} 0 0 0 0 0 0\ncpu0 ${busy} 0 0 ${idle} 0 0 0 0 0 0\n`);
  const m = new Monitor({ db, systemd: { sampleUnits: async () => [] }, logger: silentLogger, dataDir: dir, procRoot: proc });
  stat(100, 900);
  await m.sampleNow();
  t.equal(m.get().device.cpu, null, 'one reading: no delta yet');
  stat(150, 950);
  await m.sampleNow();
  t.equal(m.get().device.cpu, 50, '50 busy of 100 jiffies');
  await m.sampleNow();
  t.equal(m.get().device.cpu, 50, 'no tick elapsed: the last figure, not null');
  stat(175, 1025);
  await m.sampleNow();
  t.equal(m.get().device.cpu, 25, 'the delta is taken from the last reading that advanced');
  t.equal(m.get().device.cpuCount, 1);
});

t.test('systemd unreachable: a sample still reports the device and storage, no crash', async (t) => {
  const dir = tempDir(t);
  const { db, close } = openDatabase(join(dir, 'smd.db'));
  t.teardown(close);
  const now = Date.now();
  db.insert(services).values({ id: 'x', version: 1, unit: 'smd-x.service', createdAt: now, updatedAt: now }).run();
  const broken = { sampleUnits: async () => Promise.reject(new Error('bus down')) };
  const m = new Monitor({ db, systemd: broken, logger: silentLogger, dataDir: dir });
  await m.sampleNow();
  const s = m.get();
  t.equal(s.systemdError, 'bus down');
  t.match(s.services[0], { serviceId: 'x', memory: null, cpu: null, tasks: null, activeState: null });
  t.ok(s.device.disk);
  t.notOk(existsSync(join(dir, 'nothing')));
});
