/**
 * Losing the bus or the manager: calls fail with UNAVAILABLE within their bound instead of
 * hanging, the adapter reconnects by itself, re-subscribes and resynchronises unit states.
 */
import t from 'tap';
import { SystemdManager } from '../../src/systemd/manager.js';
import { renderUnit } from '../../src/systemd/unit.js';
import type { SystemdHealth, UnitChange, UnitState } from '../../src/systemd/types.js';
import type { SmError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { rejection } from '../helpers/rejection.js';
import { startSandbox, waitEvent } from '../helpers/sandbox.js';

const CALL_TIMEOUT = 1000;

const sb = await startSandbox(t);
const mgr = new SystemdManager({ bus: sb.bus, unitDir: sb.unitDir, logger: silentLogger, callTimeoutMs: CALL_TIMEOUT, pingIntervalMs: 300, backoffMs: { initial: 50, max: 400 } });
t.teardown(() => mgr.close());
await mgr.connect();
t.ok(mgr.health().ok);

t.test('no bus at start: connect resolves, health says why, calls are UNAVAILABLE', async (t) => {
  const mgr = new SystemdManager({ bus: 'unix:path=/nonexistent/bus', unitDir: '/nonexistent', logger: silentLogger, callTimeoutMs: CALL_TIMEOUT, backoffMs: { initial: 50, max: 200 } });
  t.teardown(() => mgr.close());
  await mgr.connect();
  const h = mgr.health();
  t.equal(h.ok, false);
  t.equal(h.bus === 'down' || h.bus === 'connecting', true, `bus ${h.bus}`);
  t.match(h.detail, /unreachable|ENOENT/);
  const err = await rejection(mgr.startUnit('smd-x.service'));
  t.equal(err.code, 'UNAVAILABLE');
});

const longRunning = (name: string) => renderUnit({ description: name, command: ['/bin/sh', '-c', 'exec sleep 300'] });
const waitHealth = (pred: (h: SystemdHealth) => boolean, what: string, timeoutMs = 15_000) => waitEvent<SystemdHealth>(mgr, 'health', pred, timeoutMs, what, () => mgr.health());
const waitUnit = (unit: string, pred: (s: UnitState) => boolean, what: string, timeoutMs = 15_000) =>
  waitEvent<UnitChange>(mgr, 'unit', (c) => c.unit === unit && pred(c.state), timeoutMs, `${unit} ${what}`, () => {
    const s = mgr.knownUnits().find((u) => u.unit === unit);
    return s ? { unit, state: s, cause: 'signal' } : undefined;
  });

t.test('dbus-daemon killed and restarted', async (t) => {
  const a = 'smd-keep.service';
  const b = 'smd-dies.service';
  await Promise.all([mgr.writeUnit(a, longRunning(a)), mgr.writeUnit(b, longRunning(b))]);
  await Promise.all([mgr.startUnit(a), mgr.startUnit(b)]);
  const pidB = (await mgr.getUnit(b)).mainPid!;

  const down = waitHealth((h) => h.bus !== 'up', 'bus down');
  await sb.killDbus();
  await down;
  t.equal(mgr.health().ok, false);

  for (const call of [() => mgr.startUnit(a), () => mgr.getUnit(a), () => mgr.listUnits(), () => mgr.reload()]) {
    const started = Date.now();
    const err = await rejection(call());
    t.equal(err.code, 'UNAVAILABLE', err.message);
    t.ok(Date.now() - started <= CALL_TIMEOUT + 500, `failed within its bound (${Date.now() - started} ms)`);
  }

  // While nobody can hear it, b's process dies: only a resync can tell.
  process.kill(pidB, 'SIGKILL');
  const resynced = waitUnit(b, (s) => s.activeState === 'failed', 'failed after resync');
  const up = waitHealth((h) => h.ok, 'healthy again');
  await sb.restartDbus();
  await up;
  const change = await resynced;
  t.equal(change.cause, 'resync', 'learned from the resync');
  t.equal(change.state.result, 'signal');
  t.equal(change.state.execMainStatus, 9, 'SIGKILL');
  t.ok(mgr.health().reconnects >= 1, 'counted the reconnect');
  t.equal((await mgr.getUnit(a)).activeState, 'active', 'the other unit kept running');

  // Signals flow again (Subscribe and match rules were renewed).
  const inactive = waitUnit(a, (s) => s.activeState === 'inactive', 'inactive after stop');
  await mgr.stopUnit(a);
  await inactive;
});

t.test('a frozen bus: calls time out with UNAVAILABLE, then the adapter recovers', async (t) => {
  const name = 'smd-frozen.service';
  await mgr.writeUnit(name, longRunning(name));
  await mgr.startUnit(name);
  const dbusPid = sb.dbusPid;
  process.kill(dbusPid, 'SIGSTOP');
  t.teardown(() => {
    try {
      process.kill(dbusPid, 'SIGCONT');
    } catch {
      /* gone */
    }
  });
  const started = Date.now();
  const err = await rejection(mgr.getUnit(name));
  const took = Date.now() - started;
  t.equal(err.code, 'UNAVAILABLE', err.message);
  t.ok(took >= CALL_TIMEOUT - 50 && took <= CALL_TIMEOUT + 500, `timed out after ${took} ms`);
  process.kill(dbusPid, 'SIGCONT');
  await waitHealth((h) => h.ok, 'healthy after SIGCONT');
  // The bus answers again (on the old connection or a new one).
  const view = await waitFor(() => mgr.getUnit(name), 10_000);
  t.equal(view.activeState, 'active');
  await mgr.stopUnit(name);
});

t.test('manager re-exec: re-subscribed, state kept', async (t) => {
  const name = 'smd-reexec.service';
  await mgr.writeUnit(name, longRunning(name));
  await mgr.startUnit(name);
  const resynced = waitEvent<UnitState[]>(mgr, 'resynced', () => true, 15_000, 'resync after daemon-reexec');
  await sb.run('systemctl', ['--user', 'daemon-reexec']);
  const states = await resynced;
  t.equal(states.find((s) => s.unit === name)?.activeState, 'active', 'still active after re-exec');
  await waitHealth((h) => h.ok, 'healthy');
  const inactive = waitUnit(name, (s) => s.activeState === 'inactive', 'inactive');
  await waitFor(() => mgr.stopUnit(name), 10_000);
  await inactive;
  t.pass('signals arrive after re-exec');
});

t.test('manager killed and started again: UNAVAILABLE meanwhile, then resync', async (t) => {
  const name = 'smd-orphan.service';
  await mgr.writeUnit(name, longRunning(name));
  await mgr.startUnit(name);
  const gone = waitHealth((h) => !h.manager, 'manager gone');
  await sb.killSystemd();
  await gone;
  t.equal(mgr.health().bus, 'up', 'the bus itself is fine');
  const err = await rejection(mgr.startUnit(name));
  t.equal(err.code, 'UNAVAILABLE');
  t.match(err.message, /not reachable|not on the bus/);

  // A fresh manager has never heard of the unit: the resync reports it inactive.
  const inactive = waitUnit(name, (s) => s.activeState === 'inactive', 'inactive after resync');
  const back = waitHealth((h) => h.ok, 'manager back');
  await sb.startSystemd();
  await back;
  t.equal((await inactive).cause, 'resync');

  const fresh = 'smd-after.service';
  await mgr.writeUnit(fresh, longRunning(fresh));
  const active = waitUnit(fresh, (s) => s.activeState === 'active', 'active');
  await mgr.startUnit(fresh);
  await active;
  await mgr.stopUnit(fresh);
});

/** Retry an action that may meet a connection being rebuilt, bounded. */
async function waitFor<T>(fn: () => Promise<T>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline || (err as SmError).code !== 'UNAVAILABLE') throw err;
      await waitEvent(mgr, 'health', (h: SystemdHealth) => h.ok, Math.max(1, deadline - Date.now()), 'healthy', () => mgr.health()).catch(() => {});
      await new Promise((r) => setImmediate(r));
    }
  }
}
