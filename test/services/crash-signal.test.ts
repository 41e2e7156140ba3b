/** A service's crash is seen from D-Bus signals within a second; systemd restarts it (real stack). */
import t from 'tap';
import { STATE, servicesFixture, type Svc } from '../helpers/services-fixture.js';

t.test('a crash is seen as failed within a second, from D-Bus signals', async (t) => {
  const { c, sb, install, img, fetchPage, serviceEvent } = await servicesFixture(t);
  t.equal((await install({ image: img['hello-http-v1'] })).state, 'succeeded');
  const before = await c.call<Svc>('services.get', { id: 'hello-http' });
  const failed = serviceEvent('hello-http', (e) => e.state === STATE.failed, 3_000);
  const killedAt = Date.now();
  await sb.run('kill', ['-KILL', String(before.live!.mainPid)]);
  const ev = await failed;
  t.ok(ev.at - killedAt < 1_000, `failed after ${ev.at - killedAt} ms`);
  // Restart=on-failure brings it back.
  await serviceEvent('hello-http', (e) => e.state === STATE.running, 10_000);
  t.match(await fetchPage(), /version 1</);
});
