/**
 * Archives from a URL through the daemon on the sandboxed stack, over links that fail: a server
 * of the test's own (Range support, TLS with a test CA) and a fault proxy between smd and a plain
 * http one (listed as insecure). A cut resumes with Range and costs at most one chunk more than
 * the archive; a stall is cut and resumed; a partial download survives a kill -9 of smd; a flipped
 * byte is INVALID_IMAGE with nothing installed; too little disk is LIMIT with nothing fetched.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { RpcClient } from '../../src/cli/client.js';
import { buildExampleImages, startDaemon, tempDir, type RunningDaemon } from '../helpers/daemon.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { startHttpSource } from '../helpers/http-source.js';
import { pushImage, startRegistry } from '../helpers/registry.js';
import { startSandbox } from '../helpers/sandbox.js';
import { makeTestCa } from '../helpers/test-ca.js';

interface Op {
  state: string;
  error: { code: string; message: string } | null;
}

const CHUNK = 64 * 1024;
const sb = await startSandbox(t);
const dir = tempDir(t, 'smd-url-');
const img = buildExampleImages(join(dir, 'images'), ['--version', '1', '--version', '2']).byName;
const file = (name: string) => ({ path: img[name]!, size: statSync(img[name]!).size, digest: `sha256:${createHash('sha256').update(readFileSync(img[name]!)).digest('hex')}` });
const hello1 = file('hello-http-v1');
const hello2 = file('hello-http-v2');
const writer1 = file('writer-v1');
const ca = await makeTestCa(join(dir, 'ca'));
const place = { sandbox: sb };
const secure = await startHttpSource(t, { ...place, files: { '/hello-v1.tar': hello1.path }, tls: { cert: ca.serverCert, key: ca.serverKey }, chunkSize: CHUNK });
const plainSource = await startHttpSource(t, { ...place, files: { '/hello-v2.tar': hello2.path, '/writer-v1.tar': writer1.path }, chunkSize: CHUNK });
const proxy = await startFaultProxy(t, { ...place, target: plainSource.host });
const proxyHost = `${proxy.host}:${proxy.port}`;
const registry = await startRegistry(t, place);
// A version no other test installs: its own layer is not in the store when the disk check runs.
await pushImage(registry, buildExampleImages(join(dir, 'images9'), ['--version', '9']).byName['writer-v9']!, 'writer:9');

const config = {
  registries: { [secure.host]: { ca: ca.caCert }, [proxyHost]: { insecure: true }, [registry.host]: { insecure: true } },
  images: { stallTimeoutMs: 1500, retries: 4 },
};
/** Daemons started inside a subtest must outlive it: they belong to the file. */
const root = t;
let daemon: RunningDaemon = await startDaemon(t, { sandbox: sb, config });
let c: RpcClient = await daemon.client();
const install = (params: Record<string, unknown>) => c.call<Op>('services.install', { ...params, wait: true });
const downloads = async () => (await sb.run('sh', ['-c', `ls -A ${join(daemon.dir, 'data/downloads/sha256')} 2>/dev/null || true`])).split('\n').filter(Boolean);

t.test('https with a custom CA: a cut at half resumes with Range, one chunk at most is paid twice', async (t) => {
  const half = Math.floor(hello1.size / 2);
  secure.cutNext('/hello-v1.tar', half);
  const op = await install({ image: secure.url('/hello-v1.tar'), digest: hello1.digest, size: hello1.size });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  t.match(await c.call('services.get', { id: 'hello-http' }), { version: 1, state: 1 });
  const gets = secure.requests().filter((r) => r.method === 'GET');
  t.equal(gets.length, 2, 'one cut, one resumed request');
  // What the socket held when the server closed may be lost to the client: it resumes from the
  // last byte it received and wrote, at most the cut point.
  const from = Number(/^bytes=(\d+)-$/.exec(gets[1]!.range ?? '')?.[1]);
  t.ok(from > half - 4 * CHUNK && from <= half, `the second asks for the rest only: ${gets[1]!.range} after a cut at ${half}`);
  const served = secure.bytesServed('/hello-v1.tar');
  t.ok(served <= hello1.size + CHUNK, `served ${served} bytes for an archive of ${hello1.size}`);
  t.same(await downloads(), [], 'the archive is dropped once installed');
});

t.test('a stalled transfer is cut after the stall timeout and resumed', async (t) => {
  const conn = proxy.next();
  proxy.stallAfter(Math.floor(hello2.size / 3), { connection: conn, from: 'body' });
  const started = Date.now();
  const op = await install({ image: `http://${proxyHost}/hello-v2.tar`, digest: hello2.digest });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  t.ok(Date.now() - started >= 1500, 'it waited for the stall timeout');
  t.match(await c.call('services.get', { id: 'hello-http' }), { version: 2, state: 1 });
  t.ok(proxy.connections().length >= 2, 'a new connection after the stall');
  t.ok(plainSource.requests().some((r) => r.path === '/hello-v2.tar' && r.range?.startsWith('bytes=') && r.range !== 'bytes=0-'), 'resumed with Range');
});

t.test('a flipped byte is INVALID_IMAGE: nothing installed, nothing kept', async (t) => {
  const layersBefore = await c.call<unknown[]>('layers.list');
  // Faults count from the first response of a connection: no kept-alive connection may carry it.
  proxy.dropAll();
  proxy.flipByteAt(1000, { from: 'body' });
  t.teardown(() => proxy.pass());
  const op = await install({ image: `http://${proxyHost}/writer-v1.tar`, digest: writer1.digest });
  t.equal(op.state, 'failed');
  t.match(op.error, { code: 'INVALID_IMAGE', message: /digest mismatch/ });
  await t.rejects(c.call('services.get', { id: 'writer' }), { code: 'NOT_FOUND' });
  t.same(await c.call('layers.list'), layersBefore, 'the layer store is as it was');
  t.same(await downloads(), [], 'the bad bytes were dropped');
});

t.test('a wrong digest is refused after the download, before anything is unpacked', async (t) => {
  proxy.pass();
  const op = await install({ image: `http://${proxyHost}/writer-v1.tar`, digest: hello1.digest });
  t.match(op.error, { code: 'INVALID_IMAGE', message: /digest mismatch/ });
  await t.rejects(c.call('services.get', { id: 'writer' }), { code: 'NOT_FOUND' });
});

t.test('a partial download survives a kill -9 of smd and is resumed, not fetched again', async (t) => {
  proxy.pass();
  proxy.dropAll();
  const third = Math.floor(writer1.size / 3);
  const conn = proxy.next();
  proxy.stallAfter(third, { connection: conn, from: 'body' });
  const pending = c.call<{ id: string }>('services.install', { image: `http://${proxyHost}/writer-v1.tar`, digest: writer1.digest, size: writer1.size });
  await proxy.waitFor((x) => x.index === conn && x.state === 'stalled', 10_000, 'the transfer to stall');
  await pending;
  // smd writes what it received in batches: kill it once a batch of them is on disk.
  const partial = join(daemon.dir, 'data/downloads/sha256', `${writer1.digest.slice(7)}.partial`);
  for (const deadline = Date.now() + 10_000; ; await new Promise((r) => setTimeout(r, 50))) {
    const size = Number((await sb.run('sh', ['-c', `stat -c %s ${partial} 2>/dev/null || echo 0`])).trim());
    if (size > 0) break;
    if (Date.now() > deadline) throw new Error('no bytes of the stalled download reached the disk within 10 s');
  }
  await daemon.stop('SIGKILL');
  proxy.pass();
  t.same(await downloads(), [`${writer1.digest.slice(7)}.partial`], 'the partial is on disk');
  const before = plainSource.requests().length;
  daemon = await startDaemon(root, { sandbox: sb, dir: daemon.dir, config });
  c = await daemon.client();
  const op = await install({ image: `http://${proxyHost}/writer-v1.tar`, digest: writer1.digest, size: writer1.size });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  const resumed = plainSource.requests().slice(before).filter((r) => r.path === '/writer-v1.tar');
  t.equal(resumed.length, 1);
  const from = Number(/^bytes=(\d+)-$/.exec(resumed[0]!.range ?? '')?.[1]);
  t.ok(from > 0 && from <= writer1.size, `resumed from byte ${from} of ${writer1.size}`);
  t.match(await c.call('services.get', { id: 'writer' }), { state: 1 });
});

t.test('too little disk: LIMIT before the first byte', async (t) => {
  const requests = plainSource.requests().length;
  const url = await install({ image: `http://${proxyHost}/writer-v1.tar`, id: 'writer-big', version: 1, digest: writer1.digest, size: 2 ** 50 });
  t.match(url.error, { code: 'LIMIT', message: /not enough disk space/ });
  t.equal(plainSource.requests().length, requests, 'the URL was not fetched');

  // A device whose reserve exceeds its disk: the registry's manifests are read, no blob fetched.
  await daemon.stop();
  daemon = await startDaemon(root, { sandbox: sb, dir: daemon.dir, config: { ...config, images: { ...config.images, reserveBytes: 2 ** 50 } } });
  c = await daemon.client();
  const blobsBefore = registry.requests().filter((r) => r.path.includes('/blobs/')).length;
  const reg = await install({ image: `docker://${registry.host}/writer:9`, id: 'writer-reg', version: 9 });
  t.match(reg.error, { code: 'LIMIT', message: /images.reserveBytes/ });
  const blobs = registry.requests().filter((r) => r.path.includes('/blobs/'));
  t.equal(blobs.length - blobsBefore, 1, 'only the image config was read (it tells the layers)');
  t.same(await downloads(), [], 'nothing downloaded');
});
