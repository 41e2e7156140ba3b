/** Start-up reconciliation and resume rules on a fake systemd and a fake host (no root). */
import t from 'tap';
import { SmError } from '../../src/errors.js';
import type { Operation } from '../../src/operations/operations.js';
import { fakeServices } from '../helpers/services-fakes.js';

t.test('fault 7: reconciliation mounts no quota for a service that will not run', async (t) => {
  const f = fakeServices(t);
  t.equal((await f.install({ image: f.images['writer-v1']!, settings: { storageLimit: 1 << 20 } })).state, 'succeeded');
  await f.services.stop('writer');
  t.equal(f.host.quotaMounts.size, 0, 'stop released the quota');
  const report = await f.services.reconcile([]);
  t.same(report.failed, []);
  t.equal(f.host.quotaMounts.size, 0, 'no quota mounted for a stopped service');
  t.ok(f.systemd.files.has('smd-writer.service'), 'its unit is written still');
});

t.test('fault 7: a throwing purge does not abort the start-up', async (t) => {
  const f = fakeServices(t);
  t.equal((await f.install({ image: f.images['writer-v1']! })).state, 'succeeded');
  f.systemd.units.clear(); // systemd restarted: the unit is not running
  f.systemd.onRemove = (name) => {
    if (name === 'smd-gone.service') throw new SmError('SYSTEMD', 'cannot remove the unit file');
  };
  const interrupted = [{ id: 'op-1', kind: 'services.remove', inputs: { id: 'gone' }, createdAt: 0 } as unknown as Operation];
  const report = await f.services.reconcile(interrupted);
  t.same(report.failed, ['gone']);
  t.same(report.started, ['writer'], 'the other services start');
});

t.test('fault 8: resume does not start a service the user stopped while it waited for the lock', async (t) => {
  const f = fakeServices(t);
  t.equal((await f.install({ image: f.images['hello-http-v1']! })).state, 'succeeded');
  t.equal((await f.install({ image: f.images['writer-v1']! })).state, 'succeeded');
  f.systemd.units.clear(); // systemd restarted: nothing runs
  f.systemd.calls.length = 0;
  // hello-http (first in order) is held by a start that waits; resume queues behind it.
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  f.systemd.onStart = (name) => (name === 'smd-hello-http.service' ? held : undefined);
  const starting = f.services.start('hello-http');
  const resumed = f.services.resume();
  await f.services.stop('writer');
  f.systemd.onStart = () => {};
  release();
  await Promise.all([starting, resumed]);
  t.match(f.services.get('writer'), { desired: 'stopped', state: 0 });
  t.notOk(f.systemd.calls.includes('start smd-writer.service'), 'writer was not started again');
});

t.test('an update interrupted after it proved itself is finished, not rolled back to layers it may have pruned', async (t) => {
  const f = fakeServices(t);
  t.equal((await f.install({ image: f.images['writer-v1']! })).state, 'succeeded');
  const previous = f.db.sqlite.prepare("SELECT * FROM services WHERE id = 'writer'").get() as Record<string, unknown>;
  t.equal((await f.install({ image: f.images['writer-v2']! })).state, 'succeeded');
  f.systemd.units.clear(); // a power cut during the update's clean-up
  const inputs = { id: 'writer', version: 2, mode: 'update', previous, committed: true };
  const report = await f.services.reconcile([{ id: 'op-1', kind: 'services.install', step: 'cleanup', inputs, createdAt: 0 } as unknown as Operation]);
  t.same(report.rolledBack, [], 'not rolled back');
  t.match(f.services.get('writer'), { version: 2, state: 1 });
  t.same(report.started, ['writer']);
});
