/** Updates: a higher version replaces the running one; one that does not stay active is rolled back (real stack). */
import t from 'tap';
import { STATE, servicesFixture, type Svc } from '../helpers/services-fixture.js';

t.test('update to a higher version; a lower one is CONFLICT; a failing one is rolled back', async (t) => {
  const { c, install, img, fetchPage } = await servicesFixture(t);
  t.equal((await install({ image: img['hello-http-v1'] })).state, 'succeeded');
  const op = await install({ image: img['hello-http-v2'] });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  t.match(await c.call<Svc>('services.get', { id: 'hello-http' }), { version: 2, state: STATE.running });
  t.match(await fetchPage(), /version 2</);
  const layers = await c.call<{ digest: string; usedBy: string[] }[]>('layers.list');
  t.equal(layers.length, 2, 'the old app layer was pruned, the shared base kept');
  await t.rejects(c.call('services.install', { image: img['hello-http-v1'], id: 'hello-http', version: 1 }), { code: 'CONFLICT' });

  const failing = await install({ image: img['failing-v1'], id: 'hello-http', version: 3 });
  t.equal(failing.state, 'failed');
  t.match(failing.error?.message, /version 2 was restored/);
  const svc = await c.call<Svc>('services.get', { id: 'hello-http' });
  t.match(svc, { version: 2, state: STATE.running });
  t.equal(svc.live?.activeState, 'active');
  t.match(await fetchPage(), /version 2</);
});
