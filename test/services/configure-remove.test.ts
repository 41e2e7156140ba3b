/** configure with expectedRowVersion and a storage quota; remove is complete and idempotent (real stack). */
import t from 'tap';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { STATE, servicesFixture, type Svc } from '../helpers/services-fixture.js';

t.test('configure with expectedRowVersion; remove is complete and idempotent', async (t) => {
  const { c, sb, d, install, img } = await servicesFixture(t);
  t.equal((await install({ image: img['writer-v1'] })).state, 'succeeded');
  const svc = await c.call<Svc>('services.get', { id: 'writer' });
  const changed = await c.call<Svc & { settings: { memoryMax?: number; ttl?: number } }>('services.configure', { id: 'writer', settings: { memoryMax: 64 * 1024 * 1024, ttl: 7 }, expectedRowVersion: svc.rowVersion });
  t.equal(changed.rowVersion, svc.rowVersion + 1);
  t.equal(changed.settings.memoryMax, 64 * 1024 * 1024);
  await t.rejects(c.call('services.configure', { id: 'writer', settings: { ttl: 8 }, expectedRowVersion: svc.rowVersion }), { code: 'CONFLICT' });
  t.match(await sb.run('cat', [join(sb.unitDir, 'smd-writer.service')]), /MemoryMax=67108864/);

  // storageLimit: /data becomes a file system of that size; writing past it fails, nothing else is harmed.
  const limited = await c.call<Svc & { settings: { storageLimit?: number } }>('services.configure', { id: 'writer', settings: { storageLimit: 2 * 1024 * 1024 } });
  t.equal(limited.settings.storageLimit, 2 * 1024 * 1024);
  const dataDirs = (await sb.run('cat', ['/proc/self/mountinfo'])).split('\n').filter((l) => / \/[^ ]*\/writer\/data /.test(l));
  t.equal(dataDirs.length, 1, 'the storage folder is a mount of its own');
  const dataDir = dataDirs[0]!.split(' ')[4]!;
  const fill = await sb.exec('dd', ['if=/dev/zero', `of=${dataDir}/fill`, 'bs=64k', 'count=64']);
  t.not(fill.code, 0, 'writing 4 MiB into a 2 MiB storage fails');
  t.match(fill.stderr, /No space left on device/);
  t.match(await c.call('services.get', { id: 'writer' }), { state: STATE.running }, 'the service still runs');
  t.ok((await c.call<{ services: unknown[] }>('monitoring.get', {})).services, 'monitoring answers');

  const uid = svc.uid;
  const removed = await c.call<{ state: string; error: unknown }>('services.remove', { id: 'writer', wait: true });
  t.equal(removed.state, 'succeeded', JSON.stringify(removed.error));
  await t.rejects(c.call('services.get', { id: 'writer' }), { code: 'NOT_FOUND' });
  await t.rejects(c.call('services.remove', { id: 'writer' }), { code: 'NOT_FOUND' });
  t.notOk(existsSync(join(sb.unitDir, 'smd-writer.service')));
  t.equal((await sb.exec('getent', ['passwd', `smd-${uid}`])).code, 2, 'account removed');
  const storage = join(d.dir, 'data/storage');
  t.notOk(readdirSync(storage).some((k) => existsSync(join(storage, k, 'writer'))), 'storage removed');
});
