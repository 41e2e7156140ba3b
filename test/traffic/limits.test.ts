/**
 * Limits against a recorded iptables: a fake runner serves `iptables-save` text and fails or
 * accepts `iptables-restore` on demand. No root, no namespaces.
 */
import t from 'tap';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../../src/db/database.js';
import { parseConfig } from '../../src/config/config.js';
import { EventBus, type EventMap } from '../../src/events/bus.js';
import { AlertStore } from '../../src/alerts/store.js';
import { SmError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import type { Runner } from '../../src/net/runner.js';
import { TrafficMonitor } from '../../src/traffic/monitor.js';
import { serviceChain } from '../../src/traffic/naming.js';

const A = 'org.example.alpha';
const ADDR = '172.30.0.5';
const noLimits = { ulLimit: null, dlLimit: null, ulSpeed: null, dlSpeed: null };

/** A fake iptables: the save shows A's download chain with `bytes`; restore fails while `failRestore`. */
function fakeIptables() {
  const state = { bytes: 0n, failRestore: false, restores: [] as string[] };
  const runner: Runner = async (file, _args, opts) => {
    if (file.endsWith('iptables-save')) {
      const c = serviceChain(A, 'in');
      const stdout = ['*filter', ':INPUT ACCEPT [0:0]', ':FORWARD ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', `:${c} - [0:0]`, `[10:${state.bytes}] -A ${c} -d ${ADDR}/32`, 'COMMIT', ''].join('\n');
      return { stdout, stderr: '' };
    }
    if (file.endsWith('iptables-restore')) {
      if (state.failRestore) throw new SmError('UNAVAILABLE', 'iptables-restore: exit code 4: Resource temporarily unavailable', { program: file });
      state.restores.push(String(opts?.input ?? ''));
      return { stdout: '', stderr: '' };
    }
    return { stdout: '', stderr: '' }; // tc: no shaping asked for here
  };
  return { state, runner };
}

t.test('a limit blocks only once the restore succeeded; the alert goes through AlertStore with source traffic', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'smd-limits-'));
  const opened = openDatabase(join(dir, 'smd.db'));
  t.teardown(() => opened.close());
  const bus = new EventBus();
  const alerts = new AlertStore({ db: opened.db, bus });
  const published: EventMap['alert'][] = [];
  bus.subscribe('alert', (a) => published.push(a));
  const config = parseConfig({ traffic: { period: 'day', sampleIntervalMs: 3_600_000, persistIntervalMs: 3_600_000 } }).traffic;
  const fake = fakeIptables();
  const clock = Date.UTC(2030, 0, 15, 12);
  const mon = new TrafficMonitor({ db: opened.db, bus, alerts, config, logger: silentLogger, now: () => clock, runner: fake.runner });
  await mon.start();
  t.teardown(() => mon.stop());
  await mon.addService(A, ADDR, { ...noLimits, dlLimit: 1000 });
  const down = () => mon.get(A).find((r) => r.direction === 'in')!;
  t.notOk(down().blocked);

  fake.state.bytes = 5000n;
  fake.state.failRestore = true;
  await mon.sampleNow();
  t.equal(down().bytes, 5000, 'counted');
  t.notOk(down().blocked, 'the DROP rule is not in place: not blocked');
  t.same(published, [], 'no "blocked" alert while the block could not be applied');
  t.notOk(mon.health().ok, 'health says why');

  fake.state.failRestore = false;
  await mon.sampleNow();
  t.ok(down().blocked, 'retried at the next sample: blocked now');
  t.ok(
    fake.state.restores.some((s) => s.includes(`${serviceChain(A, 'in')} 1 -d ${ADDR}/32 -j DROP`)),
    'the restore carried the DROP rule',
  );
  t.equal(published.length, 1, 'one alert event');
  t.equal(published[0]!.kind, 'traffic.limit');
  const stored = alerts.list({ source: 'traffic' });
  t.equal(stored.length, 1, 'one stored alert, source traffic');
  t.equal(stored[0]!.serviceId, A);
  t.match(stored[0]!.payload, { chain: serviceChain(A, 'in'), direction: 'in', limit: 1000 });
  t.equal(stored[0]!.id, published[0]!.id, 'the published alert is the stored one');

  await mon.sampleNow();
  t.equal(published.length, 1, 'no second alert for the same crossing');

  // A restart within the same period does not alert again (the stored alert says it was told).
  await mon.stop();
  const again = new TrafficMonitor({ db: opened.db, bus, alerts, config, logger: silentLogger, now: () => clock, runner: fake.runner });
  await again.start();
  t.teardown(() => again.stop());
  await again.addService(A, ADDR, { ...noLimits, dlLimit: 1000 });
  await again.sampleNow();
  t.ok(again.get(A).find((r) => r.direction === 'in')!.blocked);
  t.equal(published.length, 1, 'no alert again after a restart in the same period');
});
