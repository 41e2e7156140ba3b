/** An install whose start fails, or whose image is missing, leaves nothing behind (real stack). */
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { servicesFixture } from '../helpers/services-fixture.js';

t.test('a service whose start fails is not installed and leaves nothing behind', async (t) => {
  const { c, sb, d, install, img } = await servicesFixture(t);
  const op = await install({ image: img['failing-v1'] });
  t.equal(op.state, 'failed');
  t.match(op.error?.message, /failing/);
  await t.rejects(c.call('services.get', { id: 'failing' }), { code: 'NOT_FOUND' });
  t.notOk(existsSync(join(sb.unitDir, 'smd-failing.service')), 'no unit file');
  t.notOk(existsSync(join(d.dir, 'data/services/failing')), 'no service directory');
  const missing = await install({ image: join(d.dir, 'nope.tar') });
  t.equal(missing.state, 'failed');
  t.ok(missing.error?.message);
});
