/**
 * Which journal entries belong to a service. Pure: no I/O.
 *
 * Why not `_SYSTEMD_UNIT` alone: journald derives `_SYSTEMD_UNIT` from the cgroup the writing
 * process is in when journald reads /proc/<pid>/cgroup, and that is not always the unit's. A
 * service's stdout stream is connected by the forked child of the manager; seen from journald
 * that child can still be in the manager's own cgroup (`init.scope`): in the test sandbox
 * (systemd 252) a unit's stdout was at times filed there, so that a read by `_SYSTEMD_UNIT` found
 * none of its lines, and a stream written from the manager's cgroup is recorded with
 * `_SYSTEMD_UNIT=init.scope`, `_SYSTEMD_CGROUP=/…/init.scope` and the writer's `_UID`. A process
 * that is gone before journald looks has no cgroup fields at all. On a device (systemd PID 1)
 * the same output is usually filed under `_SYSTEMD_UNIT=<unit>`.
 *
 * So an entry is the service's when either
 *  - `_SYSTEMD_UNIT=<unit>` (journald put it in the unit's cgroup), or
 *  - it came over the service's stdout/stderr stream: `_TRANSPORT=stdout` and
 *    `SYSLOG_IDENTIFIER=smd-<id>`, which every unit sets (`SyslogIdentifier=%N`, see
 *    src/systemd/unit.ts). The stream header carrying the identifier is written by systemd
 *    before it execs the service, and journald reads a stream's header only once, so the
 *    service's own output cannot claim another identifier. What remains is a process that opens
 *    a new stream to journald itself (the socket is not inside a service's RootDirectory=, but
 *    anything else on the host could) and names itself `smd-<id>`: such an entry carries that
 *    process's own `_UID` and cgroup (trusted fields, set by journald from the socket's peer
 *    credentials and /proc). Hence the stream branch also requires `_UID=<the service's uid>`
 *    when the caller knows it (the stream is connected as the service's user), and otherwise
 *    that journald attributed the entry to no unit or to the manager's own `init.scope`, the
 *    only place a not-yet-moved child can be; an entry attributed to any other unit (another
 *    service forging the name) never counts.
 */

/** The manager's own cgroup (PID 1's, or the sandbox's user manager's). */
export const MANAGER_SCOPE = 'init.scope';

export type JournalFields = Record<string, unknown>;

const SERVICE_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** `SYSLOG_IDENTIFIER` of a unit's stdout stream: the unit name without `.service` (what `%N` gives). */
export function identifierOfUnit(unit: string): string | null {
  return unit.endsWith('.service') && unit.length > '.service'.length ? unit.slice(0, -'.service'.length) : null;
}

const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);

/**
 * Whether an entry with `SYSLOG_IDENTIFIER=<identifier>` and `_TRANSPORT=stdout` is a trusted
 * line of that service's stream (see the module comment).
 */
function trustedStreamEntry(e: JournalFields, uid: number | null | undefined): boolean {
  if (str(e._TRANSPORT) !== 'stdout') return false;
  if (typeof uid === 'number') return str(e._UID) === String(uid);
  const unit = str(e._SYSTEMD_UNIT);
  return unit === null || unit === MANAGER_SCOPE;
}

/** Whether a parsed `journalctl -o json` entry belongs to `unit` (run as `uid`, if known). */
export function entryBelongsToUnit(e: JournalFields, unit: string, uid?: number | null): boolean {
  if (str(e._SYSTEMD_UNIT) === unit) return true;
  const identifier = identifierOfUnit(unit);
  return identifier !== null && str(e.SYSLOG_IDENTIFIER) === identifier && trustedStreamEntry(e, uid);
}

/**
 * The service an entry belongs to, by `_SYSTEMD_UNIT=<prefix><id>.service`, or by the
 * identifier `<prefix><id>` of a trusted stdout stream; `uidOf` gives a service's uid when
 * known. Null for everything else (other units, smd itself, kernel, ...).
 */
export function serviceOfEntry(e: JournalFields, prefix = 'smd-', uidOf?: (id: string) => number | null | undefined): { unit: string; serviceId: string } | null {
  const valid = (id: string) => SERVICE_ID.test(id) && id.length <= 200;
  const unit = str(e._SYSTEMD_UNIT);
  if (unit && unit.startsWith(prefix) && unit.endsWith('.service')) {
    const id = unit.slice(prefix.length, -'.service'.length);
    if (valid(id)) return { unit, serviceId: id };
  }
  const ident = str(e.SYSLOG_IDENTIFIER);
  if (!ident || !ident.startsWith(prefix)) return null;
  const id = ident.slice(prefix.length);
  if (!valid(id) || !trustedStreamEntry(e, uidOf?.(id))) return null;
  return { unit: `${prefix}${id}.service`, serviceId: id };
}

/**
 * journalctl matches for a unit's entries: `_SYSTEMD_UNIT=<unit>` OR (`SYSLOG_IDENTIFIER=` and
 * `_TRANSPORT=stdout` [and `_UID=`]), with journalctl's `+` disjunction. The rest of the rule
 * (no unit or init.scope when the uid is not known) is applied by `entryBelongsToUnit`.
 */
export function unitMatchArgs(unit: string, uid?: number | null): string[] {
  const args = [`_SYSTEMD_UNIT=${unit}`];
  const identifier = identifierOfUnit(unit);
  if (identifier) {
    args.push('+', `SYSLOG_IDENTIFIER=${identifier}`, '_TRANSPORT=stdout');
    if (typeof uid === 'number') args.push(`_UID=${uid}`);
  }
  return args;
}
