/** Alert rules: schema and evaluation on a fake clock; the alert store on a real SQLite file. */
import t from 'tap';
import { join } from 'node:path';
import { evaluateRules, parseAlertRules, rulesFromColumn, type RuleState } from '../../src/alerts/rules.js';
import { AlertStore } from '../../src/alerts/store.js';
import { alertMethods } from '../../src/alerts/methods.js';
import { openDatabase } from '../../src/db/database.js';
import { EventBus } from '../../src/events/bus.js';
import { tempDir } from '../helpers/daemon.js';

t.test('schema: defaults, validation, column parsing', async (t) => {
  t.same(parseAlertRules([{ metric: 'memory', above: 100 }]), [{ id: 'memory>100', metric: 'memory', above: 100, forMs: 0, rearmBelow: 100 }]);
  t.same(parseAlertRules([{ id: 'hot', metric: 'cpu', above: 90, forMs: 60000, rearmBelow: 50 }])[0], { id: 'hot', metric: 'cpu', above: 90, forMs: 60000, rearmBelow: 50 });
  t.throws(() => parseAlertRules([{ metric: 'disk', above: 1 }]), 'unknown metric');
  t.throws(() => parseAlertRules([{ metric: 'cpu', above: 10, rearmBelow: 20 }]), 'rearmBelow above the threshold');
  t.throws(() => parseAlertRules([{ metric: 'cpu', above: -1 }]), 'negative');
  t.throws(() => parseAlertRules([{ metric: 'cpu', above: 1, extra: true }]), 'unknown key');
  t.throws(() => parseAlertRules({ metric: 'cpu' }), 'not an array');
  t.same(rulesFromColumn(null), { rules: [], error: null });
  t.equal(rulesFromColumn('[{"metric":"cpu","above":1}]').rules.length, 1);
  const bad = rulesFromColumn('[{"metric":"nope","above":1}]');
  t.same(bad.rules, []);
  t.match(bad.error, /metric/);
  t.match(rulesFromColumn('{not json').error, /JSON|Unexpected|Expected/);
});

t.test('one alert per crossing, after forMs, re-armed only below rearmBelow', async (t) => {
  const rules = parseAlertRules([{ metric: 'memory', above: 100, forMs: 1000, rearmBelow: 50 }]);
  const st = new Map<string, RuleState>();
  const at = (now: number, v: number | null) => evaluateRules(rules, { memory: v }, now, st).length;
  t.equal(at(0, 150), 0, 'above, clock starts');
  t.equal(at(500, 150), 0, 'not long enough');
  t.equal(at(999, 150), 0);
  t.equal(at(1000, 150), 1, 'fires after forMs');
  t.equal(at(2000, 200), 0, 'still above: silent');
  t.equal(at(3000, 80), 0, 'below above but not below rearmBelow: still silent');
  t.equal(at(4000, 150), 0, 'up again without re-arming: silent');
  t.equal(at(5000, 40), 0, 're-armed');
  t.equal(at(6000, 150), 0, 'clock restarts');
  t.equal(at(7000, 150), 1, 'second crossing fires once');
  t.equal(at(8000, 150), 0);
});

t.test('a dip resets the clock; null values change nothing; forMs 0 fires at once', async (t) => {
  const rules = parseAlertRules([
    { metric: 'cpu', above: 90, forMs: 1000 },
    { metric: 'storage', above: 10 },
  ]);
  const st = new Map<string, RuleState>();
  const fire = (now: number, cpu: number | null, storage: number | null = 0) => evaluateRules(rules, { cpu, storage }, now, st).map((f) => f.rule.metric);
  t.same(fire(0, 95), []);
  t.same(fire(600, 50), [], 'dip');
  t.same(fire(1200, 95), [], 'clock restarted at 1200');
  t.same(fire(1700, null), [], 'unknown value: no change');
  t.same(fire(2200, 95), ['cpu'], '1000 ms after 1200');
  t.same(fire(2300, 95, 11), ['storage'], 'forMs 0 fires on the first sample above');
  t.same(fire(2400, 95, 11), []);
  const firing = evaluateRules(parseAlertRules([{ metric: 'upload', above: 5, forMs: 0 }]), { upload: 6 }, 10, new Map())[0]!;
  t.match(firing, { value: 6, durationMs: 0 });
  // Removing a rule drops its state.
  evaluateRules([], {}, 3000, st);
  t.equal(st.size, 0);
});

t.test('store: insert, publish, list by time and service', async (t) => {
  const { db, close } = openDatabase(join(tempDir(t), 'smd.db'));
  t.teardown(close);
  const bus = new EventBus();
  const seen: unknown[] = [];
  bus.subscribe('alert', (a) => seen.push(a));
  const store = new AlertStore({ db, bus });
  store.add([
    { time: 1000, source: 'monitoring', serviceId: 'a', kind: 'rule.memory', message: 'a high', payload: { value: 1 } },
    { time: 2000, source: 'journal', serviceId: 'b', kind: 'journal.err', message: 'b failed' },
    { time: 3000, source: 'monitoring', serviceId: 'a', kind: 'rule.cpu', message: 'a hot' },
  ]);
  t.equal(seen.length, 3);
  t.match(seen[0], { id: Number, serviceId: 'a', kind: 'rule.memory', message: 'a high' });
  t.same(store.list().map((a) => a.message), ['a high', 'b failed', 'a hot']);
  t.same(store.list({ since: 2000 }).map((a) => a.message), ['b failed', 'a hot']);
  t.same(store.list({ serviceId: 'a' }).map((a) => a.kind), ['rule.memory', 'rule.cpu']);
  t.same(store.list({ limit: 2 }).map((a) => a.time), [2000, 3000], 'the newest, oldest first');
  t.same(store.list({ since: 1000, serviceId: 'a' })[0]!.payload, { value: 1 });
  const [method] = alertMethods(store);
  t.equal(method!.name, 'alerts.list');
  t.same((await method!.handler(method!.params.parse({ serviceId: 'b' }), { readOnly: true })).map((a: { source: string }) => a.source), ['journal']);
  t.throws(() => method!.params.parse({ since: 'yesterday' }));
  t.equal(method!.mutating, false);
});
