/**
 * Which journal entries are a service's, on entries recorded in the sandbox (systemd 252): one
 * filed under the unit, one of the same service's stdout stream that journald attributed to the
 * manager's `init.scope` (the child was not yet in the unit's cgroup), and one that another
 * unit wrote with a forged `-t smd-writer` stream header.
 */
import t from 'tap';
import { entryBelongsToUnit, serviceOfEntry, unitMatchArgs } from '../../src/journal/match.js';
import { selectUnitEntries } from '../../src/journal/logs.js';
import { parseJournalLine } from '../../src/journal/alerts.js';

const inUnit = { __CURSOR: 's=a7;i=3a0', __REALTIME_TIMESTAMP: '1796177862520075', PRIORITY: '6', MESSAGE: 'writer v1: tick 1', SYSLOG_IDENTIFIER: 'smd-writer', _TRANSPORT: 'stdout', _UID: '65534', _PID: '24985', _COMM: 'sh', _SYSTEMD_UNIT: 'smd-writer.service', _SYSTEMD_CGROUP: '/smd-sandbox-b4fyLZ.slice/app.slice/smd-writer.service', _SYSTEMD_SLICE: 'app.slice' };
const inInitScope = { __CURSOR: 's=a7;i=3a4', __REALTIME_TIMESTAMP: '1796177862578343', PRIORITY: '3', MESSAGE: 'writer misattributed error', SYSLOG_IDENTIFIER: 'smd-writer', _TRANSPORT: 'stdout', _UID: '65534', _PID: '24988', _COMM: 'sh', _SYSTEMD_UNIT: 'init.scope', _SYSTEMD_CGROUP: '/smd-sandbox-b4fyLZ.slice/init.scope', _SYSTEMD_SLICE: 'smd-sandbox-b4fyLZ.slice' };
const forged = { __CURSOR: 's=a7;i=3a2', __REALTIME_TIMESTAMP: '1796177862540501', PRIORITY: '3', MESSAGE: 'forged by evil', SYSLOG_IDENTIFIER: 'smd-writer', _TRANSPORT: 'stdout', _UID: '1', _PID: '24986', _COMM: 'echo', _SYSTEMD_UNIT: 'smd-evil.service', _SYSTEMD_CGROUP: '/smd-sandbox-b4fyLZ.slice/app.slice/smd-evil.service', _SYSTEMD_SLICE: 'app.slice' };

t.test('an entry is the unit’s by _SYSTEMD_UNIT or by its own stdout stream', async (t) => {
  t.ok(entryBelongsToUnit(inUnit, 'smd-writer.service'));
  t.ok(entryBelongsToUnit(inInitScope, 'smd-writer.service'), 'stream entry filed under init.scope');
  t.ok(entryBelongsToUnit(inInitScope, 'smd-writer.service', 65534), 'with the service uid');
  t.notOk(entryBelongsToUnit(inInitScope, 'smd-writer.service', 5001), 'another uid: not the service’s stream');
  t.ok(entryBelongsToUnit({ ...inInitScope, _SYSTEMD_UNIT: undefined, _SYSTEMD_CGROUP: undefined }, 'smd-writer.service'), 'no cgroup fields (gone before journald looked)');
  t.notOk(entryBelongsToUnit(forged, 'smd-writer.service'), 'another unit naming itself smd-writer');
  t.notOk(entryBelongsToUnit(forged, 'smd-writer.service', 65534), 'with the uid known: the forger’s own uid does not match');
  t.notOk(entryBelongsToUnit({ ...inInitScope, _TRANSPORT: 'journal' }, 'smd-writer.service'), 'native protocol can set any SYSLOG_IDENTIFIER');
  t.notOk(entryBelongsToUnit({ ...inInitScope, _TRANSPORT: 'syslog' }, 'smd-writer.service'));
  t.notOk(entryBelongsToUnit({ ...inInitScope, _SYSTEMD_UNIT: 'session-1.scope' }, 'smd-writer.service'), 'a login session, uid unknown');
  t.notOk(entryBelongsToUnit(inInitScope, 'smd-other.service'));
});

t.test('journalctl matches: the unit OR the stream identifier', async (t) => {
  t.same(unitMatchArgs('smd-writer.service'), ['_SYSTEMD_UNIT=smd-writer.service', '+', 'SYSLOG_IDENTIFIER=smd-writer', '_TRANSPORT=stdout']);
  t.same(unitMatchArgs('smd-writer.service', 5000), ['_SYSTEMD_UNIT=smd-writer.service', '+', 'SYSLOG_IDENTIFIER=smd-writer', '_TRANSPORT=stdout', '_UID=5000']);
  t.same(unitMatchArgs('x.scope'), ['_SYSTEMD_UNIT=x.scope']);
});

t.test('logs: recorded output with a misattributed entry and a forged one', async (t) => {
  const text = [inUnit, forged, inInitScope].map((e) => JSON.stringify(e)).join('\n') + '\n';
  const r = selectUnitEntries(text, { unit: 'smd-writer.service', lines: 100 });
  t.same(r.entries.map((e) => e.message), ['writer v1: tick 1', 'writer misattributed error']);
  t.equal(r.cursor, 's=a7;i=3a4');
  t.same(r.entries[1], { time: 1796177862578, priority: 3, message: 'writer misattributed error', cursor: 's=a7;i=3a4' });
  const one = selectUnitEntries(text, { unit: 'smd-writer.service', lines: 1 });
  t.same(one.entries.map((e) => e.message), ['writer v1: tick 1']);
  t.equal(one.cursor, 's=a7;i=3a0', 'the cursor stops at the last entry returned');
  const onlyForged = selectUnitEntries(JSON.stringify(forged), { unit: 'smd-writer.service', lines: 10, cursor: 'before' });
  t.same(onlyForged, { entries: [], cursor: 's=a7;i=3a2' }, 'the cursor moves past what is not the unit’s');
  t.same(selectUnitEntries('', { unit: 'smd-writer.service', lines: 10, cursor: 'c0' }), { entries: [], cursor: 'c0' });
});

t.test('alerts: a misattributed error line is the service’s alert', async (t) => {
  t.same(serviceOfEntry(inInitScope), { unit: 'smd-writer.service', serviceId: 'writer' });
  t.same(serviceOfEntry(inInitScope, 'smd-', (id) => (id === 'writer' ? 65534 : null)), { unit: 'smd-writer.service', serviceId: 'writer' });
  t.equal(serviceOfEntry(inInitScope, 'smd-', () => 5000), null, 'not the installed service’s uid');
  t.same(serviceOfEntry(forged), { unit: 'smd-evil.service', serviceId: 'evil' }, 'a forged name is its writer’s own output');
  t.equal(serviceOfEntry({ ...forged, _SYSTEMD_UNIT: 'cron.service' }), null);
  t.equal(serviceOfEntry({ ...inInitScope, SYSLOG_IDENTIFIER: 'smd-' }), null, 'smd- alone names no service');
  t.equal(serviceOfEntry({ ...inInitScope, SYSLOG_IDENTIFIER: 'smd-../x' }), null);
  t.equal(serviceOfEntry({ ...inInitScope, SYSLOG_IDENTIFIER: 'smd' }), null);
  const parsed = parseJournalLine(JSON.stringify(inInitScope), 3, 'smd-', () => 65534);
  t.same(parsed, { cursor: 's=a7;i=3a4', entry: { unit: 'smd-writer.service', serviceId: 'writer', priority: 3, message: 'writer misattributed error', cursor: 's=a7;i=3a4', time: 1796177862578, pid: 24988 } });
  t.same(parseJournalLine(JSON.stringify({ ...inInitScope, PRIORITY: '6' }), 3), { cursor: 's=a7;i=3a4', entry: null });
});
