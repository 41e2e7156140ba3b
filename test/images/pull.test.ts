/**
 * Services from a real registry (Debian's docker-registry, images pushed with skopeo), through
 * the daemon on the sandboxed stack: anonymous over plain http (listed as insecure), OCI and
 * Docker schema-2 manifests, zstd layers, only missing blobs fetched, bytes in the operation's
 * events; basic auth over TLS with a custom CA (and a refusal with a wrong password); a bearer
 * token from the registry's challenge, fetched again when it expires in the middle of a pull.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RpcClient } from '../../src/cli/client.js';
import { buildExampleImages, startDaemon, tempDir } from '../helpers/daemon.js';
import { pushImage, startRegistry, type Registry } from '../helpers/registry.js';
import { execBounded, startSandbox } from '../helpers/sandbox.js';

interface Op {
  id: string;
  state: string;
  error: { code: string; message: string } | null;
  transfer?: { bytesDone: number; bytesTotal: number };
}
interface Svc {
  id: string;
  version: number;
  state: number;
  layers: string[];
  live: { activeState: string } | null;
}

const sb = await startSandbox(t);
const dir = tempDir(t, 'smd-pull-');
const img = buildExampleImages(join(dir, 'images')).byName;
const place = { sandbox: sb };
const plain = await startRegistry(t, place);
const basic = await startRegistry(t, { ...place, auth: 'basic' });
const wrong = await startRegistry(t, { ...place, auth: 'basic' });
const token = await startRegistry(t, { ...place, auth: 'token' });

const passwordFile = (name: string, password: string) => {
  const p = join(dir, `${name}.pass`);
  writeFileSync(p, `${password}\n`, { mode: 0o600 });
  return p;
};
const pushed = {
  v1: await pushImage(plain, img['hello-http-v1']!, 'hello:1'),
  v2: await pushImage(plain, img['hello-http-v2']!, 'hello:2'),
};
await pushImage(plain, img['writer-v1']!, 'writer-zstd:1', { compress: 'zstd' });
await pushImage(plain, img['writer-v1']!, 'writer-v2s2:1', { format: 'v2s2' });
await pushImage(basic, img['hello-http-v1']!, 'app/hello:1');
await pushImage(wrong, img['hello-http-v1']!, 'app/hello:1');
await pushImage(token, img['writer-v1']!, 'team/writer:1');
await pushImage(token, img['writer-v2']!, 'team/writer2:2');

const creds = (r: Registry, password = r.password!) => ({ username: r.username!, passwordFile: passwordFile(r.host.replace(/\W/g, '_'), password), ca: r.caCert! });
const daemon = await startDaemon(t, {
  sandbox: sb,
  config: {
    registries: {
      [plain.host]: { insecure: true },
      [basic.host]: creds(basic),
      [wrong.host]: creds(wrong, 'not-the-password'),
      [token.host]: creds(token),
    },
    // One layer at a time, so that a token expiring meanwhile meets the next request.
    images: { parallelFetches: 1 },
  },
});
const c: RpcClient = await daemon.client();
const install = (params: Record<string, unknown>) => c.call<Op>('services.install', { ...params, wait: true });
const blobGets = (r: Registry) => r.requests().filter((q) => q.method === 'GET' && /\/blobs\/sha256:/.test(q.path) && q.status === 200);

t.test('anonymous registry: install, then an update that fetches only the missing layers', async (t) => {
  const transfers: NonNullable<Op['transfer']>[] = [];
  c.onNotification((method, params) => {
    const ev = params as { topic?: string; transfer?: Op['transfer'] };
    if (method === 'event' && ev.topic === 'operation' && ev.transfer) transfers.push(ev.transfer);
  });
  await c.call('events.subscribe', { topics: ['operation'] });

  const op = await install({ image: `docker://${plain.host}/hello:1` });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  const v1 = await c.call<Svc>('services.get', { id: 'hello-http' });
  t.match(v1, { version: 1, state: 1, live: { activeState: 'active' } });
  t.ok(transfers.length > 0, 'the operation events carried the bytes');
  const last = transfers[transfers.length - 1]!;
  t.ok(last.bytesTotal > 0 && last.bytesDone === last.bytesTotal, `the last transfer event is complete: ${JSON.stringify(last)}`);

  const before = blobGets(plain).length;
  const up = await install({ image: `docker://${plain.host}/hello:2` });
  t.equal(up.state, 'succeeded', JSON.stringify(up.error));
  const v2 = await c.call<Svc>('services.get', { id: 'hello-http' });
  t.equal(v2.version, 2);
  const shared = v2.layers.filter((l) => v1.layers.includes(l));
  t.ok(shared.length > 0, 'v1 and v2 share their base layer');
  const fetched = blobGets(plain).slice(before).map((q) => q.path.replace(/^.*\/blobs\//, ''));
  for (const l of shared) t.notOk(fetched.includes(l), `the shared layer ${l.slice(0, 19)} was not fetched again`);
  t.ok(fetched.some((d) => v2.layers.includes(d)), 'the new layer was fetched');
  const downloads = await sb.run('sh', ['-c', `ls -A ${join(daemon.dir, 'data/downloads/sha256')} | wc -l`]);
  t.equal(downloads.trim(), '0', 'a finished install leaves no downloads behind');
  t.not(pushed.v1, pushed.v2);
});

t.test('zstd layers and a Docker schema-2 manifest install and run', async (t) => {
  const z = await install({ image: `docker://${plain.host}/writer-zstd:1`, id: 'writer-zstd', version: 1 });
  t.equal(z.state, 'succeeded', JSON.stringify(z.error));
  t.match(await c.call<Svc>('services.get', { id: 'writer-zstd' }), { state: 1, live: { activeState: 'active' } });
  const d = await install({ image: `docker://${plain.host}/writer-v2s2:1`, id: 'writer-v2s2', version: 1 });
  t.equal(d.state, 'succeeded', JSON.stringify(d.error));
  t.match(await c.call<Svc>('services.get', { id: 'writer-v2s2' }), { state: 1, live: { activeState: 'active' } });
});

t.test('basic auth over TLS with the CA of the configuration; a wrong password is FORBIDDEN', async (t) => {
  const op = await install({ image: `docker://${basic.host}/app/hello:1`, id: 'hello-basic', version: 1 });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  const bad = await install({ image: `docker://${wrong.host}/app/hello:1`, id: 'hello-wrong', version: 1 });
  t.equal(bad.state, 'failed');
  t.equal(bad.error?.code, 'FORBIDDEN', bad.error?.message);
  await t.rejects(c.call('services.get', { id: 'hello-wrong' }), { code: 'NOT_FOUND' }, 'nothing was installed');
});

t.test('bearer token: fetched from the challenge, and again once it expired mid-pull', async (t) => {
  const op = await install({ image: `docker://${token.host}/team/writer:1`, id: 'writer-token', version: 1 });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  const first = token.tokenRequests();
  t.ok(first >= 1, `${first} token request(s), the pushes' included`);
  t.ok(token.tokenLog().every((e) => e.account === token.username && e.granted), 'every token was asked for with the configured account');

  // smd keeps the repository's token: a second pull within its lifetime asks for none.
  const again = await install({ image: `docker://${token.host}/team/writer:1`, id: 'writer-token2', version: 1 });
  t.equal(again.state, 'succeeded', JSON.stringify(again.error));
  t.equal(token.tokenRequests(), first, 'the kept token was reused');

  // Tokens of one second now: a pull from another repository gets one, and the next pull from
  // it, once that token expired, meets the registry's refusal (401), answers the challenge again
  // and goes on.
  token.setTokenTtl(1);
  const short = await install({ image: `docker://${token.host}/team/writer2:2`, id: 'writer-token3', version: 2 });
  t.equal(short.state, 'succeeded', JSON.stringify(short.error));
  // A pull slower than the token's second (a loaded machine) refreshes it once more on the way.
  const second = token.tokenRequests();
  t.ok(second >= first + 1, `a token for the new repository (${second - first} requests)`);
  // The state waited for is the clock: the token's lifetime is what makes the registry refuse it.
  await new Promise((r) => setTimeout(r, Math.max(0, token.lastTokenExpiresAt() + 200 - Date.now())));
  const refusalsBefore = token.requests().filter((q) => q.status === 401).length;
  const after = await install({ image: `docker://${token.host}/team/writer2:2`, id: 'writer-token4', version: 2 });
  t.equal(after.state, 'succeeded', JSON.stringify(after.error));
  t.ok(token.requests().filter((q) => q.status === 401).length > refusalsBefore, 'the registry refused the expired token');
  t.ok(token.tokenRequests() > second, 'and smd fetched a new token and went on');
});

t.test('a missing tag is NOT_FOUND, a host not listed as insecure is refused over http', async (t) => {
  const missing = await install({ image: `docker://${plain.host}/hello:404` });
  t.equal(missing.state, 'failed');
  t.equal(missing.error?.code, 'NOT_FOUND', missing.error?.message);
  await t.rejects(c.call('services.install', { image: `ftp://${plain.host}/x` }), { rpcCode: -32602 }, 'an unknown scheme is a bad parameter');
  const notListed = await install({ image: `http://127.0.0.1:1/x.tar`, digest: `sha256:${'0'.repeat(64)}` });
  t.equal(notListed.state, 'failed');
  t.match(notListed.error, { code: 'INVALID_IMAGE', message: /only https, or http for hosts listed/ });
});

t.test('a Docker archive (skopeo copy ... docker-archive:) installs and runs', async (t) => {
  const archive = join(dir, 'writer-docker.tar');
  const r = await execBounded('skopeo', ['copy', '--quiet', `oci-archive:${img['writer-v2']}`, `docker-archive:${archive}:smd/writer:2`], { timeoutMs: 60_000 });
  t.equal(r.code, 0, r.stderr);
  const op = await install({ image: archive, id: 'writer-docker', version: 2 });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  t.match(await c.call<Svc>('services.get', { id: 'writer-docker' }), { state: 1, live: { activeState: 'active' } });
});
