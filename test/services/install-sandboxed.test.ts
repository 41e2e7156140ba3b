/** An installed service runs sandboxed from its image, as its own uid, in its own network (real stack). */
import t from 'tap';
import { join } from 'node:path';
import { STATE, servicesFixture, type Svc } from '../helpers/services-fixture.js';

t.test('install runs the service sandboxed from its image, as its own uid', async (t) => {
  const { c, sb, install, img, fetchPage } = await servicesFixture(t);
  const op = await install({ image: img['hello-http-v1'] });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  const svc = await c.call<Svc>('services.get', { id: 'hello-http' });
  t.match(svc, { id: 'hello-http', version: 1, state: STATE.running, status: 0, unit: 'smd-hello-http.service' });
  t.equal(svc.live?.activeState, 'active');
  t.ok(svc.live?.mainPid);
  t.ok(svc.uid >= 5000 && svc.uid <= 9999);
  t.match(await fetchPage(), /version 1</, 'the page is served from the overlay root');
  const status = await sb.run('cat', [`/proc/${svc.live!.mainPid}/status`]);
  t.match(status, new RegExp(`^Uid:\\s+${svc.uid}\\s`, 'm'), 'runs as its own uid');
  t.match(status, /^NoNewPrivs:\s+1$/m);
  t.match(status, /^CapBnd:\s+0+$/m, 'no capabilities');
  const unitText = await sb.run('cat', [join(sb.unitDir, 'smd-hello-http.service')]);
  t.match(unitText, /RootDirectory=/);
  t.match(unitText, /ProtectSystem=strict/);
  t.match((await c.call<Svc[]>('services.list')).map((s) => s.id), ['hello-http']);

  t.test('the service has its own network with traffic accounting', async (t) => {
    const svc = await c.call<{ address: string }>('services.get', { id: 'hello-http' });
    t.match(svc.address, /^172\.30\.\d+\.\d+$/);
    const rows = await c.call<{ serviceId: string | null; direction: string; bytes: number; blocked: boolean }[]>('traffic.get', { serviceId: 'hello-http' });
    t.same(rows.map((r) => r.direction).sort(), ['in', 'out']);
    t.ok(rows.every((r) => r.serviceId === 'hello-http' && r.bytes >= 0 && !r.blocked));
    t.match(unitText, /NetworkNamespacePath=\/run\/netns\/smd-/);
    const health = await c.call<{ checks: { traffic: { ok: boolean; detail: string } } }>('system.health');
    t.equal(health.checks.traffic.ok, true, health.checks.traffic.detail);
  });
});
