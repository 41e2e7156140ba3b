/**
 * The border: D-Bus error replies become SmError codes here and nowhere else. Callers test the
 * code (`isSmError(err, 'NOT_FOUND')`), never the message; the D-Bus name stays in details.
 */
import { SmError, type ErrorCode } from '../errors.js';

/** D-Bus error names that mean "the other side is not there (or did not answer)", not "it said no". */
export const UNAVAILABLE_ERRORS: ReadonlySet<string> = new Set([
  'org.freedesktop.DBus.Error.ServiceUnknown',
  'org.freedesktop.DBus.Error.NameHasNoOwner',
  'org.freedesktop.DBus.Error.NoReply',
  'org.freedesktop.DBus.Error.Disconnected',
  'org.freedesktop.DBus.Error.Timeout',
  'org.freedesktop.DBus.Error.TimedOut',
  'org.freedesktop.DBus.Error.NoServer',
  'org.freedesktop.DBus.Error.NoNetwork',
  'org.freedesktop.DBus.Error.LimitsExceeded',
]);

const NOT_FOUND_ERRORS: ReadonlySet<string> = new Set(['org.freedesktop.systemd1.NoSuchUnit', 'org.freedesktop.systemd1.NoSuchJob', 'org.freedesktop.DBus.Error.UnknownObject']);

const FORBIDDEN_ERRORS: ReadonlySet<string> = new Set([
  'org.freedesktop.DBus.Error.AccessDenied',
  'org.freedesktop.DBus.Error.AuthFailed',
  'org.freedesktop.DBus.Error.InteractiveAuthorizationRequired',
]);

/** The SmError code of a D-Bus error reply, from its name (and systemd's "not loaded" text). */
export function dbusErrorCode(name: string, message = ''): ErrorCode {
  if (UNAVAILABLE_ERRORS.has(name)) return 'UNAVAILABLE';
  if (NOT_FOUND_ERRORS.has(name)) return 'NOT_FOUND';
  if (FORBIDDEN_ERRORS.has(name)) return 'FORBIDDEN';
  // systemd answers some calls on an unloaded unit with a generic name and "Unit x not loaded."
  if (/\bunit \S+ not loaded\b/i.test(message)) return 'NOT_FOUND';
  return 'SYSTEMD';
}

/**
 * One D-Bus error reply as an SmError: `what` says which call (e.g. `StopUnit smd-x.service`),
 * details carry the D-Bus name and the unit.
 */
export function fromDbusError(err: { name: string; message: string }, what: string, unit?: string): SmError {
  const code = dbusErrorCode(err.name, err.message);
  return new SmError(code, `systemd ${what}: ${err.message}`, { dbusError: err.name, ...(unit ? { unit } : {}) }, { cause: err });
}
