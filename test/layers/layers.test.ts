/** The layer store through the real daemon: install, reuse, usage, remove, prune, start-up repair. */
import t from 'tap';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { buildExampleImages, startDaemon, tempDir } from '../helpers/daemon.js';

function buildImages(dir: string, extra: string[] = []) {
  return { ...buildExampleImages(dir, extra), layerPackage: join(dir, 'layer-base.tar') };
}

interface Op {
  id: string;
  state: string;
  progress: number;
  error: { code: string; message: string } | null;
  result: { digests: string[]; extracted: string[]; reused: string[] } & { removed: string[] };
}

t.test('install a layer package, reuse it, see usage, refuse removal in use, prune', async (t) => {
  const dir = tempDir(t);
  const images = buildImages(join(dir, 'images'));
  const d = await startDaemon(t, { dir });
  const c = await d.client();
  const events: { id: string; progress: number }[] = [];
  c.onNotification((_m, p) => events.push(p as { id: string; progress: number }));
  await c.call('events.subscribe', { topics: ['operation'] });

  const first = await c.call<Op>('layers.install', { image: images.layerPackage, wait: true });
  t.equal(first.state, 'succeeded', JSON.stringify(first.error));
  t.same(first.result.extracted, [images.baseLayer]);
  const progress = events.filter((e) => e.id === first.id).map((e) => e.progress);
  t.same(progress, [...progress].sort((a, b) => a - b), 'progress only grows');
  t.equal(progress.at(-1), 100, 'and ends at 100');
  const dirs = readdirSync(join(d.dir, 'data/layers/sha256'));
  t.same(dirs, [images.baseLayer.slice(7)], 'one directory per digest, no staging left');
  t.ok(existsSync(join(d.dir, 'data/layers/sha256', images.baseLayer.slice(7), 'bin/busybox')));

  const again = await c.call<Op>('layers.install', { image: images.layerPackage, wait: true });
  t.same(again.result.extracted, [], 'a layer already present is not unpacked again');
  t.same(again.result.reused, [images.baseLayer]);

  const layer = await c.call<{ digest: string; usedBy: string[]; size: number; path: string }>('layers.get', { digest: images.baseLayer });
  t.same(layer.usedBy, []);
  t.ok(layer.size > 500_000, 'size counts the unpacked bytes');
  t.match(await c.call('layers.list'), [{ digest: images.baseLayer }]);

  // A service that references the layer (services arrive with a later issue; a row is enough).
  const db = new Database(d.dbPath);
  db.prepare('INSERT INTO services (id, version, layerList) VALUES (?, 1, ?)').run('svc-a', JSON.stringify([images.baseLayer]));
  db.close();
  t.same((await c.call<{ usedBy: string[] }>('layers.get', { digest: images.baseLayer })).usedBy, ['svc-a']);
  await t.rejects(c.call('layers.remove', { digest: images.baseLayer }), { code: 'CONFLICT' });
  const pruned = await c.call<Op>('layers.prune', { wait: true });
  t.same(pruned.result.removed, [], 'prune keeps layers in use');
  t.ok(existsSync(layer.path));

  const db2 = new Database(d.dbPath);
  db2.prepare('DELETE FROM services').run();
  db2.close();
  const pruned2 = await c.call<Op>('layers.prune', { wait: true });
  t.same(pruned2.result.removed, [images.baseLayer]);
  t.notOk(existsSync(layer.path), 'directory removed');
  await t.rejects(c.call('layers.get', { digest: images.baseLayer }), { code: 'NOT_FOUND' });
  await t.rejects(c.call('layers.remove', { digest: 'sha256:' + '0'.repeat(64) }), { code: 'NOT_FOUND' });
  await t.rejects(c.call('layers.get', { digest: 'md5:abc' }), { rpcCode: -32602 });
});

t.test('a layer package for another OS version is INCOMPATIBLE and writes nothing', async (t) => {
  const dir = tempDir(t);
  const images = buildImages(join(dir, 'images'), ['--os-version', '12']);
  const d = await startDaemon(t, { dir });
  const c = await d.client();
  await c.call('system.setVersion', { version: 11 });
  const refused = await c.call<Op>('layers.install', { image: images.layerPackage, wait: true });
  t.equal(refused.state, 'failed');
  t.equal(refused.error?.code, 'INCOMPATIBLE');
  t.match(refused.error?.message, /OS version 12.*system is 11/);
  t.same(readdirSync(join(d.dir, 'data/layers/sha256')), []);
  await c.call('system.setVersion', { version: 12 });
  const ok = await c.call<Op>('layers.install', { image: images.layerPackage, wait: true });
  t.equal(ok.state, 'succeeded');
  t.match(await c.call('layers.get', { digest: images.baseLayer }), { osVersion: '12', layerId: String });
});

t.test('a broken archive fails the operation with INVALID_IMAGE and leaves nothing', async (t) => {
  const dir = tempDir(t);
  const d = await startDaemon(t, { dir });
  const c = await d.client();
  const junk = join(dir, 'junk.tar');
  writeFileSync(junk, Buffer.alloc(4096, 7));
  const op = await c.call<Op>('layers.install', { image: junk, wait: true });
  t.equal(op.state, 'failed');
  t.equal(op.error?.code, 'INVALID_IMAGE');
  const missing = await c.call<Op>('layers.install', { image: join(dir, 'nope.tar'), wait: true });
  t.equal(missing.state, 'failed');
  t.same(readdirSync(join(d.dir, 'data/layers/sha256')), []);
  await t.rejects(c.call('layers.install', { image: 'relative.tar' }), { rpcCode: -32602 });
});

t.test('start-up removes layer directories without a row and forgets rows without a directory', async (t) => {
  const dir = tempDir(t);
  const first = await startDaemon(t, { dir });
  await first.stop();
  const store = join(dir, 'data/layers/sha256');
  mkdirSync(join(store, 'f'.repeat(64), 'bin'), { recursive: true });
  mkdirSync(join(store, `.${'e'.repeat(64)}.staging-abc`), { recursive: true });
  const db = new Database(first.dbPath);
  db.prepare('INSERT INTO layers (digest, path) VALUES (?, ?)').run('sha256:' + 'a'.repeat(64), join(store, 'a'.repeat(64)));
  db.close();
  const d = await startDaemon(t, { dir });
  t.same(readdirSync(store), []);
  const c = await d.client();
  t.same(await c.call('layers.list'), []);
});
