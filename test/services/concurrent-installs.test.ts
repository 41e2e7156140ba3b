/** Two installs of one id, or an install and a remove, run one after the other (real stack). */
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { STATE, servicesFixture, type Svc } from '../helpers/services-fixture.js';

t.test('two installs of one id at once: one after the other, never both half-done', async (t) => {
  const { c, sb, install, img } = await servicesFixture(t);
  const [a, b] = await Promise.all([install({ image: img['writer-v1'] }), install({ image: img['writer-v2'] })]);
  // Whichever read its image first installs; the other waits, then updates (v2) or is refused (v1 after v2).
  t.equal(b.state, 'succeeded', 'v2 installs or updates');
  t.ok(a.state === 'succeeded' || a.error?.code === 'CONFLICT', `v1: ${a.state} ${a.error?.code ?? ''}`);
  t.match(await c.call('services.get', { id: 'writer' }), { version: 2, state: STATE.running });

  const [installed, removed] = await Promise.all([
    install({ image: img['writer-v1'], id: 'writer', version: 1, force: true }),
    c.call<{ state: string }>('services.remove', { id: 'writer', wait: true }),
  ]);
  t.equal(removed.state, 'succeeded');
  t.equal(installed.state, 'succeeded');
  // Either order is fine; what is left is whole: installed and running, or gone without a trace.
  const left = await c.call<Svc>('services.get', { id: 'writer' }).catch(() => null);
  if (left) {
    t.match(left, { version: 1, state: STATE.running });
    t.ok(existsSync(join(sb.unitDir, 'smd-writer.service')));
    t.equal((await c.call<{ state: string }>('services.remove', { id: 'writer', wait: true })).state, 'succeeded');
  } else {
    t.notOk(existsSync(join(sb.unitDir, 'smd-writer.service')));
  }
});
