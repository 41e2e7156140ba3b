/** The pure record folding of the systemd adapter (src/systemd/props.ts). */
import t from 'tap';
import { applyService, applyUnit, checkUnitName, newRecord, publicState } from '../../src/systemd/props.js';

t.test('property changes fold into a record; what a change lacks is kept', async (t) => {
  const rec = newRecord('smd-a.service');
  t.same(publicState(rec), { unit: 'smd-a.service', loadState: null, activeState: 'inactive', subState: 'dead', result: null, execMainStatus: null, execMainCode: null, mainPid: null, restarts: null, since: null });
  applyUnit(rec, { ActiveState: { signature: 's', value: 'active' }, SubState: 'running', LoadState: 'loaded', StateChangeTimestamp: 1_700_000_000_123_456n });
  t.match(rec, { activeState: 'active', subState: 'running', loadState: 'loaded', since: 1_700_000_000_123 });
  applyUnit(rec, { StateChangeTimestamp: 0n, ActiveState: 42 });
  t.equal(rec.since, 1_700_000_000_123, 'a zero timestamp keeps the last one');
  t.equal(rec.activeState, 'active', 'a non-string state keeps the last one');
  applyService(rec, { MainPID: 1234, Result: 'exit-code', ExecMainStatus: 3, ExecMainCode: 1, NRestarts: 2n });
  t.match(rec, { mainPid: 1234, result: 'exit-code', execMainStatus: 3, execMainCode: 1, restarts: 2 });
  applyService(rec, { MainPID: 0 });
  t.equal(rec.mainPid, null, 'MainPID 0 is no process');
  const copy = publicState(rec);
  copy.activeState = 'failed';
  t.equal(rec.activeState, 'active', 'publicState is a copy');
});

t.test('unit names are checked before the bus', async (t) => {
  t.doesNotThrow(() => checkUnitName('smd-a@b:c_d.service'));
  for (const bad of ['', 'no-suffix', 'smd a.service', 'x'.repeat(250) + '.service', 'smd-a.Service']) t.throws(() => checkUnitName(bad), { code: 'INTERNAL' }, JSON.stringify(bad).slice(0, 30));
});
