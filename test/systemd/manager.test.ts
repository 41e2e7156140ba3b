/**
 * The adapter against a real `systemd --user` on a private bus (scripts/sandbox).
 */
import t from 'tap';
import { readdir } from 'node:fs/promises';
import { SystemdManager } from '../../src/systemd/manager.js';
import { renderUnit, type UnitSpec } from '../../src/systemd/unit.js';
import type { UnitChange, UnitState } from '../../src/systemd/types.js';
import { DbusConnection } from '../../src/systemd/dbus.js';
import { isSmError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { rejection } from '../helpers/rejection.js';
import { startSandbox, waitEvent } from '../helpers/sandbox.js';

const sb = await startSandbox(t);
const mgr = new SystemdManager({ bus: sb.bus, unitDir: sb.unitDir, logger: silentLogger, callTimeoutMs: 3000 });
t.teardown(() => mgr.close());
await mgr.connect();
t.ok(mgr.health().ok, 'connected and attached');

const unitFor = (name: string, spec: Partial<UnitSpec>) => renderUnit({ description: `test ${name}`, command: ['/bin/sh', '-c', 'exec sleep 300'], ...spec });

const waitUnit = (unit: string, pred: (s: UnitState) => boolean, what: string, timeoutMs = 10_000) =>
  waitEvent<UnitChange>(mgr, 'unit', (c) => c.unit === unit && pred(c.state), timeoutMs, `${unit} ${what}`, () => {
    const s = mgr.knownUnits().find((u) => u.unit === unit);
    return s ? { unit, state: s, cause: 'signal' } : undefined;
  });

t.test('write, reload, start: active arrives as an event; the live view; stop', async (t) => {
  const name = 'smd-run.service';
  await mgr.writeUnit(name, unitFor(name, { limits: { memoryMax: 64 << 20, tasksMax: 16 } }));
  const active = waitUnit(name, (s) => s.activeState === 'active', 'active');
  const outcome = await mgr.startUnit(name);
  t.equal(outcome.jobResult, 'done');
  const change = await active;
  t.equal(change.state.subState, 'running');

  const view = await mgr.getUnit(name);
  t.equal(view.activeState, 'active');
  t.ok(view.mainPid && view.mainPid > 0, 'main pid');
  t.ok(view.since && Math.abs(view.since - Date.now()) < 60_000, 'since is a recent ms epoch');
  t.equal(view.restarts, 0);
  t.ok(view.tasksCurrent !== null && view.tasksCurrent >= 1, 'tasks counted');
  t.ok(view.memoryCurrent === null || view.memoryCurrent > 0, 'memory is a number or null (no BigInt)');
  t.equal(typeof view.memoryCurrent === 'bigint', false);

  const [batch, never] = await mgr.getUnits([name, 'smd-never-written.service']);
  t.equal(batch!.activeState, 'active', 'batch view agrees');
  t.equal(batch!.mainPid, view.mainPid);
  t.equal(never!.activeState, 'inactive', 'a unit without a file is inactive');
  t.equal(never!.loadState, 'not-found');

  const listed = await mgr.listUnits();
  t.ok(listed.some((u) => u.unit === name && u.activeState === 'active'), 'ListUnitsByPatterns sees it');

  const inactive = waitUnit(name, (s) => s.activeState === 'inactive', 'inactive');
  const stopped = await mgr.stopUnit(name);
  t.equal(stopped.jobResult, 'done');
  await inactive;
  t.equal((await mgr.getUnit(name)).mainPid, null);

  t.ok(await mgr.removeUnit(name), 'removed');
  t.notOk((await readdir(sb.unitDir)).includes(name));
  t.notOk(await mgr.removeUnit(name), 'second removal reports absence');
});

t.test('a unit that exits 3 is reported failed with status 3 and Result=exit-code', async (t) => {
  const name = 'smd-exit3.service';
  await mgr.writeUnit(name, unitFor(name, { command: ['/bin/sh', '-c', 'exit 3'] }));
  const failed = waitUnit(name, (s) => s.activeState === 'failed', 'failed');
  await mgr.startUnit(name); // Type=exec: the start job is done once exec() succeeded
  const change = await failed;
  t.equal(change.state.result, 'exit-code');
  t.equal(change.state.execMainStatus, 3);
  t.equal(change.state.execMainCode, 1, 'CLD_EXITED');

  // A oneshot fails its start job: the rejection carries the details.
  const one = 'smd-exit3-oneshot.service';
  await mgr.writeUnit(one, unitFor(one, { type: 'oneshot', command: ['/bin/sh', '-c', 'exit 3'] }));
  const err = await rejection(mgr.startUnit(one));
  t.equal(err.code, 'SYSTEMD');
  t.match(err.details, { unit: one, jobResult: 'failed', result: 'exit-code', execMainStatus: 3 });

  // The recorded state survives resetting (and systemd forgetting) the unit.
  await mgr.resetFailedUnit(one);
  const view = await mgr.getUnit(name);
  t.equal(view.activeState, 'failed');
  t.equal(view.execMainStatus, 3);
});

t.test('a notify unit that never becomes ready times out', async (t) => {
  const name = 'smd-noready.service';
  await mgr.writeUnit(name, unitFor(name, { type: 'notify', startTimeoutSec: 1 }));
  const started = Date.now();
  const err = await rejection(mgr.startUnit(name));
  t.equal(err.code, 'SYSTEMD');
  t.match(err.details, { unit: name, result: 'timeout' });
  t.ok(['failed', 'timeout'].includes(String(err.details?.jobResult)), `job result ${String(err.details?.jobResult)}`);
  t.ok(Date.now() - started < 8000, 'bounded by TimeoutStartSec');
});

t.test('restart counts and restartUnit', async (t) => {
  const name = 'smd-restart.service';
  await mgr.writeUnit(name, unitFor(name, { restart: { policy: 'always', restartSec: 0.1, burst: 100, intervalSec: 10 } }));
  await mgr.startUnit(name);
  const before = (await mgr.getUnit(name)).mainPid;
  const out = await mgr.restartUnit(name);
  t.equal(out.jobResult, 'done');
  const view = await mgr.getUnit(name);
  t.equal(view.activeState, 'active');
  t.not(view.mainPid, before, 'new main process');
  // Kill the main process: Restart=always brings it back and NRestarts counts it.
  process.kill(view.mainPid!, 'SIGKILL');
  const restarted = await waitUnit(name, (s) => (s.restarts ?? 0) >= 1 && s.activeState === 'active', 'restarted by systemd');
  t.ok(restarted.state.restarts! >= 1);
  t.equal((await mgr.getUnit(name)).restarts, restarted.state.restarts);
  await mgr.stopUnit(name);
});

t.test('concurrent writers share one Reload', async (t) => {
  const names = Array.from({ length: 8 }, (_, i) => `smd-batch${i}.service`);
  const before = await reloadCount();
  await Promise.all(names.map((n) => mgr.writeUnit(n, unitFor(n, {}))));
  const after = await reloadCount();
  t.equal(after - before, 1, 'one Reload for eight writes');
  const results = await Promise.all(names.map((n) => mgr.startUnit(n)));
  t.same(results.map((r) => r.jobResult), names.map(() => 'done'));
  await Promise.all(names.map((n) => mgr.stopUnit(n)));
});

/** Reloads as systemd reports them: Manager.Reloading(true) signals, watched on a connection of our own. */
async function reloadCount(): Promise<number> {
  return reloadSignals;
}
let reloadSignals = 0;
{
  const watcher = new DbusConnection(sb.bus);
  await watcher.open(3000);
  await watcher.addMatch("type='signal',interface='org.freedesktop.systemd1.Manager',member='Reloading'", 3000);
  watcher.on('signal', (s) => {
    if (s.member === 'Reloading' && s.body[0] === true) reloadSignals++;
  });
  t.teardown(() => watcher.close());
}

t.test('50 start/stop cycles add no match rules on the bus', async (t) => {
  const name = 'smd-cycle.service';
  await mgr.writeUnit(name, unitFor(name, {}));
  const stats = async () => {
    const c = new DbusConnection(sb.bus);
    await c.open(3000);
    try {
      const [dict] = await c.call({ destination: 'org.freedesktop.DBus', path: '/org/freedesktop/DBus', interface: 'org.freedesktop.DBus.Debug.Stats', member: 'GetConnectionStats', signature: 's', body: [mgr.uniqueName] }, { timeoutMs: 3000 });
      const d = dict as Record<string, { value: number }>;
      return { rules: d.MatchRules!.value, peak: d.PeakMatchRules!.value };
    } finally {
      c.close();
    }
  };
  const before = await stats();
  t.ok(before.rules <= 3, `the adapter holds ${before.rules} match rules`);
  const started = Date.now();
  for (let i = 0; i < 50; i++) {
    await mgr.startUnit(name);
    await mgr.stopUnit(name);
  }
  const after = await stats();
  t.equal(after.rules, before.rules, 'same number of match rules after 50 cycles');
  t.equal(after.peak, before.peak, 'and never more in between');
  t.comment(`50 start/stop cycles: ${Date.now() - started} ms`);
});

t.test('an unknown unit is NOT_FOUND, bad names are refused before the bus', async (t) => {
  const err = await rejection(mgr.stopUnit('smd-does-not-exist.service'));
  t.ok(isSmError(err, 'NOT_FOUND'), `${err.code}: ${err.message}`);
  const start = await rejection(mgr.startUnit('smd-does-not-exist.service'));
  t.equal(start.code, 'NOT_FOUND');
  t.match(start.details, { dbusError: 'org.freedesktop.systemd1.NoSuchUnit' });
  const bad = await rejection(mgr.writeUnit('other.service', ''));
  t.equal(bad.code, 'INTERNAL');
  const bad2 = await rejection(mgr.writeUnit('smd-../x.service', ''));
  t.equal(bad2.code, 'INTERNAL');
});
