/**
 * Journal alerts against a real journald in a sandbox: a unit's `<3>` line becomes one alert; a
 * new follower on the same database (a restart) does not report it again, and sees what was
 * logged while none was running.
 */
import t from 'tap';
import { join } from 'node:path';
import { AlertStore } from '../../src/alerts/store.js';
import { openDatabase } from '../../src/db/database.js';
import { EventBus, type EventMap } from '../../src/events/bus.js';
import { JournalAlerts, parseJournalLine } from '../../src/journal/alerts.js';
import { silentLogger } from '../../src/log.js';
import { SYSLOG_IDENTIFIER } from '../../src/systemd/unit.js';
import { tempDir } from '../helpers/daemon.js';
import { startSandbox, type Sandbox } from '../helpers/sandbox.js';

const line = (o: Record<string, unknown>) => JSON.stringify({ __CURSOR: 'c1', __REALTIME_TIMESTAMP: '1795485797492182', PRIORITY: '3', _SYSTEMD_UNIT: 'smd-web.service', MESSAGE: 'boom', _PID: '12', ...o });

t.test('parsing journal lines', async (t) => {
  t.same(parseJournalLine(line({}), 3), { cursor: 'c1', entry: { unit: 'smd-web.service', serviceId: 'web', priority: 3, message: 'boom', cursor: 'c1', time: 1795485797492, pid: 12 } });
  t.same(parseJournalLine(line({ PRIORITY: '4' }), 3), { cursor: 'c1', entry: null }, 'below the alert priority');
  t.equal(parseJournalLine(line({ PRIORITY: '4' }), 4)!.entry!.priority, 4, 'configurable');
  t.same(parseJournalLine(line({ _SYSTEMD_UNIT: 'smd.service' }), 3), { cursor: 'c1', entry: null }, 'smd itself is not a service');
  t.same(parseJournalLine(line({ _SYSTEMD_UNIT: 'cron.service' }), 3), { cursor: 'c1', entry: null });
  t.same(parseJournalLine(line({ _SYSTEMD_UNIT: undefined }), 3), { cursor: 'c1', entry: null });
  t.equal(parseJournalLine(line({ MESSAGE: [104, 105, 0, 255] }), 3)!.entry!.message.slice(0, 2), 'hi', 'binary MESSAGE');
  t.equal(parseJournalLine('-- No entries --', 3), null);
  t.equal(parseJournalLine('{"MESSAGE":"no cursor"}', 3), null);
  t.equal(parseJournalLine('{broken', 3), null);
});

let sb: Sandbox;
t.before(async () => {
  sb = await startSandbox(t);
});

/**
 * Runs a oneshot unit that prints `lines` on stdout, and waits until systemd says it finished.
 * It names its stream as every smd unit does (`SyslogIdentifier=%N`): without it a line journald
 * files under init.scope (see src/journal/match.ts) is nobody's, and the test failed in CI.
 */
async function logFromUnit(name: string, lines: string[]): Promise<void> {
  const script = lines.map((l) => `echo "${l}"`).join('; ');
  await sb.exec('sh', ['-c', `cat > ${join(sb.unitDir, name)}`], { input: `[Service]\nType=oneshot\n${SYSLOG_IDENTIFIER}\nExecStart=/bin/sh -c '${script}'\n` });
  await sb.run('systemctl', ['--user', 'daemon-reload']);
  await sb.run('systemctl', ['--user', 'start', name], { timeoutMs: 20_000 });
}

/**
 * Writes `lines` over a stdout stream named `identifier` from a process in the sandbox manager's
 * own cgroup (its init.scope): what journald records when a unit's child connected its stdout
 * before it was moved into the unit's cgroup.
 */
async function streamFromManagerCgroup(identifier: string, lines: string[], uid = 65534) {
  const cgroup = (await sb.run('cat', [`/proc/${sb.systemdPid}/cgroup`])).split('\n').find((l) => l.startsWith('0::'))!.slice(3);
  const procs = ['/sys/fs/cgroup/unified', '/sys/fs/cgroup/systemd', '/sys/fs/cgroup'].map((b) => `${b}${cgroup}/cgroup.procs`).join(' ');
  const script = `for f in ${procs}; do [ -e "$f" ] && echo $$ > "$f"; done; exec setpriv --reuid=${uid} --regid=${uid} --clear-groups systemd-cat -t "$0" sh -c 'for l in "$@"; do printf "%s\\n" "$l"; done' sh "$@"`;
  return sb.exec('sh', ['-c', script, identifier, ...lines], { timeoutMs: 10_000 });
}

function waitAlert(bus: EventBus, pred: (a: EventMap['alert']) => boolean, timeoutMs: number, what: string): Promise<EventMap['alert']> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => (off(), reject(new Error(`no alert ${what} within ${timeoutMs} ms`))), timeoutMs);
    const off = bus.subscribe('alert', (a) => {
      if (!pred(a)) return;
      clearTimeout(timer);
      off();
      resolve(a);
    });
  });
}

t.test('an error line becomes one alert, exactly once across a restart', async (t) => {
  const { db, close } = openDatabase(join(tempDir(t), 'smd.db'));
  t.teardown(close);
  const journalctl = ['nsenter', '-t', String(sb.pid), '-m', '-n', '--', 'journalctl'];
  const bus = new EventBus();
  const store = new AlertStore({ db, bus });
  const make = () => new JournalAlerts({ db, alerts: store, logger: silentLogger, alertPriority: 3, journalctl });

  // Something logged before the very first start is history: not reported.
  await logFromUnit('smd-old.service', ['<3>before smd ever ran']);
  const a = make();
  await a.start();
  t.teardown(() => a.stop());
  const cursor0 = a.cursor();
  t.ok(cursor0, 'the first start takes the tail as its cursor at once');

  const first = waitAlert(bus, (x) => x.message === 'first failure', 15_000, 'first failure');
  await logFromUnit('smd-errsvc.service', ['<6>all fine', '<3>first failure', '<4>just a warning']);
  const got = await first;
  t.match(got, { serviceId: 'errsvc', kind: 'journal.err', message: 'first failure' });
  t.equal(a.health().ok, true, a.health().detail);
  const cursor1 = a.cursor();
  t.not(cursor1, cursor0, 'cursor moved with the alert');
  const stored = store.list({ source: 'journal' });
  t.equal(stored.length, 1, 'info and warning lines are no alerts; history is not replayed');
  t.match(stored[0]!.payload, { unit: 'smd-errsvc.service', priority: 3, cursor: cursor1 });
  await a.stop();

  // While smd is "down": another error.
  await logFromUnit('smd-errsvc.service', ['<2>second failure while down']);
  const b = make();
  const second = waitAlert(bus, (x) => x.message === 'second failure while down', 15_000, 'second failure');
  await b.start();
  t.teardown(() => b.stop());
  const got2 = await second;
  t.equal(got2.kind, 'journal.crit');
  // journalctl delivers in journal order: a duplicate of the first would have come before.
  t.same(store.list({ source: 'journal' }).map((x) => x.message), ['first failure', 'second failure while down'], 'nothing twice, nothing missed');
  await b.stop();
});

t.test('an error line of a stream journald filed under init.scope is the service’s alert', async (t) => {
  const { db, close } = openDatabase(join(tempDir(t), 'smd.db'));
  t.teardown(close);
  const bus = new EventBus();
  const store = new AlertStore({ db, bus });
  const j = new JournalAlerts({ db, alerts: store, logger: silentLogger, journalctl: ['nsenter', '-t', String(sb.pid), '-m', '-n', '--', 'journalctl'] });
  await j.start();
  t.teardown(() => j.stop());
  // What a unit's child writes before it is in the unit's cgroup: a stdout stream named smd-<id>
  // from a process in the manager's cgroup (init.scope). Reproduced here by moving the writer there.
  const seen = waitAlert(bus, (x) => x.message === 'misattributed failure', 15_000, 'misattributed failure');
  const r = await streamFromManagerCgroup('smd-scoped', ['<3>misattributed failure']);
  t.equal(r.code, 0, r.stderr);
  const got = await seen;
  t.match(got, { serviceId: 'scoped', kind: 'journal.err' });
  t.match(store.list({ source: 'journal' }).find((a) => a.message === 'misattributed failure')?.payload, { unit: 'smd-scoped.service', priority: 3 });
});

t.test('journalctl dying is restarted with backoff and misses nothing', async (t) => {
  const { db, close } = openDatabase(join(tempDir(t), 'smd.db'));
  t.teardown(close);
  const bus = new EventBus();
  const store = new AlertStore({ db, bus });
  const j = new JournalAlerts({ db, alerts: store, logger: silentLogger, journalctl: ['nsenter', '-t', String(sb.pid), '-m', '-n', '--', 'journalctl'], backoffMs: { initial: 50, max: 200 } });
  await j.start();
  t.teardown(() => j.stop());
  const child = (j as unknown as { child: { pid: number } }).child;
  // A stand-in for a crash: kill the follower, log meanwhile, expect the alert anyway.
  process.kill(child.pid, 'SIGKILL');
  const seen = waitAlert(bus, (x) => x.message === 'after the crash', 15_000, 'after the crash');
  await logFromUnit('smd-crashy.service', ['<3>after the crash']);
  t.match(await seen, { serviceId: 'crashy' });
  t.equal(store.list().length, 1);
});

t.test('storm: at most maxPerServicePerMinute alerts, the next carries the count', async (t) => {
  const { db, close } = openDatabase(join(tempDir(t), 'smd.db'));
  t.teardown(close);
  const bus = new EventBus();
  const store = new AlertStore({ db, bus });
  const j = new JournalAlerts({ db, alerts: store, logger: silentLogger, maxPerServicePerMinute: 3, journalctl: ['nsenter', '-t', String(sb.pid), '-m', '-n', '--', 'journalctl'] });
  await j.start();
  t.teardown(() => j.stop());
  const last = waitAlert(bus, (x) => x.message === 'e3', 15_000, 'e3');
  await logFromUnit('smd-storm.service', ['<3>e1', '<3>e2', '<3>e3', '<3>e4', '<3>e5', '<3>e6']);
  await last;
  // The cursor passes the dropped lines too: wait until it reached the last line.
  await j.stop();
  t.same(store.list().map((x) => x.message), ['e1', 'e2', 'e3']);
});
