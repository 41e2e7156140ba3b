/** stop, start and restart resolve when systemd's job is done; the state follows (real stack). */
import t from 'tap';
import { STATE, servicesFixture, type Svc } from '../helpers/services-fixture.js';

t.test('stop and start resolve when systemd is done; state follows', async (t) => {
  const { c, install, img, fetchPage } = await servicesFixture(t);
  t.equal((await install({ image: img['hello-http-v1'] })).state, 'succeeded');
  const stopped = await c.call<Svc>('services.stop', { id: 'hello-http' });
  t.equal(stopped.state, STATE.stopped);
  t.equal((await c.call<Svc>('services.get', { id: 'hello-http' })).live?.activeState, 'inactive');
  const started = await c.call<Svc>('services.start', { id: 'hello-http' });
  t.equal(started.state, STATE.running);
  t.match(await fetchPage(), /version 1</);
  const restarted = await c.call<Svc>('services.restart', { id: 'hello-http' });
  t.equal(restarted.state, STATE.running);
});
