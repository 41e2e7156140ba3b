/**
 * D-Bus errors become SmError codes at the border: against a real `systemd --user` on a private
 * bus (scripts/sandbox).
 */
import t from 'tap';
import { SystemdManager } from '../../src/systemd/manager.js';
import { isSmError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { rejection } from '../helpers/rejection.js';
import { startSandbox } from '../helpers/sandbox.js';

const sb = await startSandbox(t);
const mgr = new SystemdManager({ bus: sb.bus, unitDir: sb.unitDir, logger: silentLogger, callTimeoutMs: 3000 });
t.teardown(() => mgr.close());
await mgr.connect();

t.test('a unit systemd has not loaded is NOT_FOUND, with the D-Bus error name in details', async (t) => {
  for (const [what, call] of [
    ['stopUnit', () => mgr.stopUnit('smd-never-loaded.service')],
    ['resetFailedUnit', () => mgr.resetFailedUnit('smd-never-loaded.service')],
  ] as const) {
    const err = await rejection(call());
    t.ok(isSmError(err, 'NOT_FOUND'), `${what}: NOT_FOUND (got ${err.code}: ${err.message})`);
    t.equal(err.details?.dbusError, 'org.freedesktop.systemd1.NoSuchUnit', `${what}: the D-Bus name in details`);
    t.equal(err.details?.unit, 'smd-never-loaded.service');
  }
});

t.test('starting a unit without a file is NOT_FOUND; a failed job stays SYSTEMD', async (t) => {
  const err = await rejection(mgr.startUnit('smd-never-written.service'));
  t.ok(isSmError(err, 'NOT_FOUND'), `${err.code}: ${err.message}`);
  t.equal(err.details?.dbusError, 'org.freedesktop.systemd1.NoSuchUnit');
  const name = 'smd-exit3-errors.service';
  await mgr.writeUnit(name, '[Service]\nType=oneshot\nExecStart=/bin/sh -c "exit 3"\n');
  const failed = await rejection(mgr.startUnit(name));
  t.ok(isSmError(failed, 'SYSTEMD'), `${failed.code}: ${failed.message}`);
  await mgr.removeUnit(name);
});
