/** configure rules on a fake systemd and a fake host (no root). */
import t from 'tap';
import { SmError } from '../../src/errors.js';
import { fakeServices } from '../helpers/services-fakes.js';

t.test('fault 4: a resize error is reported even when the start after it fails too', async (t) => {
  const f = fakeServices(t);
  t.equal((await f.install({ image: f.images['writer-v1']!, settings: { storageLimit: 1 << 20 } })).state, 'succeeded');
  f.host.fail = (method) => (method === 'resizeQuota' ? new Error('resize2fs: device busy') : undefined);
  f.systemd.onStart = () => {
    throw new SmError('SYSTEMD', 'start job failed', { jobResult: 'failed' });
  };
  await t.rejects(f.services.configure('writer', { storageLimit: 2 << 20 }), { message: /resize2fs: device busy/ });
});

t.test('fault 4: a failed restart after configure is an error for the caller', async (t) => {
  const f = fakeServices(t);
  t.equal((await f.install({ image: f.images['writer-v1']! })).state, 'succeeded');
  f.systemd.onRestart = () => {
    throw new SmError('SYSTEMD', 'restart job failed', { jobResult: 'failed' });
  };
  await t.rejects(f.services.configure('writer', { env: { MODE: 'fast' } }), { code: 'SYSTEMD', message: /restart/ });
  t.match(f.services.get('writer').settings, { env: { MODE: 'fast' } }, 'the settings are kept');
});

t.test('configure without a failure restarts and answers the new settings', async (t) => {
  const f = fakeServices(t);
  t.equal((await f.install({ image: f.images['writer-v1']! })).state, 'succeeded');
  const svc = await f.services.configure('writer', { env: { MODE: 'fast' } });
  t.match(svc.settings, { env: { MODE: 'fast' } });
  t.ok(f.systemd.calls.includes('restart smd-writer.service'));
});
