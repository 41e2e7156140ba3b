/** Start/stop rules on a fake systemd and a fake host (no root). */
import t from 'tap';
import { fakeServices } from '../helpers/services-fakes.js';

t.test('install on fakes: account, storage, root overlay, unit, running', async (t) => {
  const f = fakeServices(t);
  const op = await f.install({ image: f.images['writer-v1']! });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  const svc = f.services.get('writer');
  t.match(svc, { id: 'writer', version: 1, state: 1, status: 0 });
  t.ok(f.host.accounts.has(svc.uid));
  t.ok(f.systemd.files.get('smd-writer.service'));
  t.equal(f.host.mounts.size, 1, 'the root overlay is mounted');
  const stopped = await f.services.stop('writer');
  t.equal(stopped.state, 0);
  t.equal(f.host.mounts.size, 0, 'stop releases the root');
});

t.test('fault 1: a failed signal handled while the start job was pending is not overwritten by running', async (t) => {
  const f = fakeServices(t);
  t.equal((await f.install({ image: f.images['writer-v1']! })).state, 'succeeded');
  await f.services.stop('writer');
  // The unit starts, then fails before the job's reply reaches smd.
  f.systemd.onStart = (name) => f.systemd.signal(name, 'failed', 'failed', 'exit-code');
  await f.services.start('writer');
  t.match(f.services.get('writer'), { state: 2, status: 1 }, 'the database says failed, as systemd does');
});
