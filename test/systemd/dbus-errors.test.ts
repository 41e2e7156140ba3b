/** The pure D-Bus → SmError mapping (src/systemd/errors.ts). */
import t from 'tap';
import { dbusErrorCode, fromDbusError } from '../../src/systemd/errors.js';

t.test('error names map to codes', async (t) => {
  const cases: [string, string, string][] = [
    ['org.freedesktop.systemd1.NoSuchUnit', 'Unit smd-a.service not loaded.', 'NOT_FOUND'],
    ['org.freedesktop.systemd1.NoSuchUnit', 'Unit smd-a.service not found.', 'NOT_FOUND'],
    ['org.freedesktop.DBus.Error.InvalidArgs', 'Unit smd-a.service not loaded.', 'NOT_FOUND'],
    ['org.freedesktop.DBus.Error.AccessDenied', 'Permission denied', 'FORBIDDEN'],
    ['org.freedesktop.DBus.Error.InteractiveAuthorizationRequired', 'Interactive authentication required.', 'FORBIDDEN'],
    ['org.freedesktop.DBus.Error.NoReply', 'Did not receive a reply', 'UNAVAILABLE'],
    ['org.freedesktop.DBus.Error.Timeout', 'Connection timed out', 'UNAVAILABLE'],
    ['org.freedesktop.DBus.Error.Disconnected', 'gone', 'UNAVAILABLE'],
    ['org.freedesktop.DBus.Error.ServiceUnknown', 'The name is not activatable', 'UNAVAILABLE'],
    ['org.freedesktop.systemd1.UnitMasked', 'Unit smd-a.service is masked.', 'SYSTEMD'],
    ['org.freedesktop.DBus.Error.InvalidArgs', 'Invalid argument', 'SYSTEMD'],
  ];
  for (const [name, message, code] of cases) t.equal(dbusErrorCode(name, message), code, `${name} "${message}"`);
});

t.test('the SmError names the call, the D-Bus error and the unit, and keeps the cause', async (t) => {
  const cause = { name: 'org.freedesktop.systemd1.NoSuchUnit', message: 'Unit smd-a.service not loaded.' };
  const e = fromDbusError(cause, 'StopUnit smd-a.service', 'smd-a.service');
  t.equal(e.code, 'NOT_FOUND');
  t.equal(e.message, 'systemd StopUnit smd-a.service: Unit smd-a.service not loaded.');
  t.same(e.details, { dbusError: cause.name, unit: 'smd-a.service' });
  t.equal(e.cause, cause);
  t.same(fromDbusError({ name: 'x.Y', message: 'm' }, 'Reload').details, { dbusError: 'x.Y' }, 'no unit when none is given');
});
