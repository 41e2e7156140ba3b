/** Update and rollback rules on a fake systemd and a fake host (no root). */
import t, { type Test } from 'tap';
import { SmError } from '../../src/errors.js';
import { fakeServices } from '../helpers/services-fakes.js';

async function installed(t: Test) {
  const f = fakeServices(t);
  const op = await f.install({ image: f.images['writer-v1']! });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  return f;
}

t.test('fault 2: a stop error of the previous version fails the update, which restores it running', async (t) => {
  const f = await installed(t);
  let once = true;
  f.systemd.onStop = () => {
    if (!once) return;
    once = false;
    throw new SmError('SYSTEMD', 'job failed: stop timed out', { jobResult: 'timeout' });
  };
  const op = await f.install({ image: f.images['writer-v2']! });
  t.equal(op.state, 'failed');
  t.match(op.error?.message, /version 1 was restored/);
  t.match(f.services.get('writer'), { version: 1, state: 1 });
  t.equal((await f.systemd.getUnit('smd-writer.service')).activeState, 'active');
});

t.test('fault 2: an EBUSY unmount of the previous root fails the update, which restores it running', async (t) => {
  const f = await installed(t);
  let once = true;
  f.host.fail = (method) => {
    if (method === 'unmount' && once) {
      once = false;
      return Object.assign(new Error('umount: target is busy'), { code: 'EBUSY' });
    }
    return undefined;
  };
  const op = await f.install({ image: f.images['writer-v2']! });
  t.equal(op.state, 'failed');
  t.match(op.error?.message, /version 1 was restored.*busy/);
  t.match(f.services.get('writer'), { version: 1, state: 1 });
  t.equal((await f.systemd.getUnit('smd-writer.service')).activeState, 'active');
});

t.test('fault 3: a rollback that throws keeps the update failure and still prunes', async (t) => {
  const f = await installed(t);
  f.systemd.onStart = (name) => {
    if (/ v2$/m.test(f.systemd.files.get(name)!.split('\n').find((l) => l.startsWith('Description='))!)) throw new SmError('SYSTEMD', 'start job failed', { jobResult: 'failed', result: 'exit-code' });
  };
  f.host.fail = (method, _target, upper) => (method === 'mountOverlay' && String(upper).endsWith('upper-v1') ? new Error('mount of v1 failed') : undefined);
  const prunes = f.layers.prunes;
  const op = await f.install({ image: f.images['writer-v2']! });
  t.equal(op.state, 'failed');
  t.match(op.error?.message, /to version 2 failed.*failed to start/, "the update's own failure is reported");
  t.match(op.error?.message, /rollback.*mount of v1 failed/, 'and the rollback failure');
  t.equal(op.error?.code, 'SYSTEMD');
  t.ok(f.layers.prunes > prunes, 'the prune still ran');
});
