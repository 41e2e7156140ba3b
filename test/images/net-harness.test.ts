// The network image-source harness (test/helpers/registry.ts, http-source.ts, fault-proxy.ts,
// test-ca.ts) proven with the standard clients, curl and skopeo, not smd: a real registry without
// auth, with basic auth over TLS and with token auth (a refresh after expiry), a static source
// with ranges, a fault proxy that cuts, stalls and flips, and all of it inside a network namespace
// of its own, as smd's daemon tests run smd.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildExampleImages, tempDir } from '../helpers/daemon.js';
import { startFaultProxy, inNetns } from '../helpers/fault-proxy.js';
import { startHttpSource } from '../helpers/http-source.js';
import { digestOf, pushImage, skopeo, startRegistry, type Registry } from '../helpers/registry.js';
import { execBounded } from '../helpers/sandbox.js';
import { makeTestCa } from '../helpers/test-ca.js';

const NEEDED = ['/usr/bin/docker-registry', '/usr/bin/skopeo', '/usr/bin/openssl', '/usr/bin/htpasswd', '/usr/bin/curl', '/bin/busybox'];
const missing = NEEDED.filter((p) => !existsSync(p));
const skip = missing.length ? `needs ${missing.join(', ')} (scripts/setup installs them)` : process.getuid?.() !== 0 ? 'needs root (network namespaces)' : false;

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const work = tempDir(t, 'smd-net-harness-');
const hello = skip ? '' : buildExampleImages(join(work, 'images'), ['--version', '1']).byName['hello-http-v1']!;
const blob = join(work, 'blob.bin');
const blobData = randomBytes(1 << 20);
writeFileSync(blob, blobData);

const curl = (args: string[], place: { netnsPid?: number } = {}) => {
  const [c, a] = inNetns(place, 'curl', ['-sS', '--max-time', '10', ...args]);
  return execBounded(c, a, { timeoutMs: 15_000 });
};
const inspect = (reg: Registry, ref: string, creds = true, extra: string[] = []) =>
  skopeo(reg, ['inspect', '--raw', ...reg.skopeoFlags('plain', { creds }), ...extra, `docker://${reg.host}/${ref}`]);

t.test('test CA: the server certificate verifies for 127.0.0.1 and localhost', { skip }, async (t) => {
  const ca = await makeTestCa(join(tempDir(t), 'ca'));
  for (const [flag, name] of [['-verify_ip', '127.0.0.1'], ['-verify_hostname', 'localhost']]) {
    const r = await execBounded('openssl', ['verify', '-CAfile', ca.caCert, flag!, name!, ca.serverCert], { timeoutMs: 5000 });
    t.equal(r.code, 0, `${name}: ${r.stdout.trim()} ${r.stderr.trim()}`);
  }
  t.ok(existsSync(join(ca.certDir, 'ca.crt')));
});

t.test('registry without auth: push (OCI gzip, OCI zstd, v2s2) and inspect', { skip }, async (t) => {
  const reg = await startRegistry(t);
  t.match(reg.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  const digest = await pushImage(reg, hello, 'hello:1');
  const raw = await inspect(reg, 'hello:1');
  t.equal(raw.code, 0, raw.stderr);
  t.equal(digestOf(raw.stdout), digest, 'the digest returned is that of the stored manifest');
  t.equal(JSON.parse(raw.stdout).mediaType, 'application/vnd.oci.image.manifest.v1+json');
  t.match(JSON.parse(raw.stdout).layers[0].mediaType, /tar\+gzip$/);

  // Another repository: pushed beside the gzip one, skopeo would reuse the gzip layers.
  await pushImage(reg, hello, 'hello-zstd:1', { format: 'oci', compress: 'zstd' });
  const z = JSON.parse((await inspect(reg, 'hello-zstd:1')).stdout);
  t.match(z.layers[0].mediaType, /tar\+zstd$/);

  await pushImage(reg, hello, 'hello:v2s2', { format: 'v2s2' });
  t.equal(JSON.parse((await inspect(reg, 'hello:v2s2')).stdout).mediaType, 'application/vnd.docker.distribution.manifest.v2+json');

  const log = reg.requests();
  t.ok(log.some((r) => r.method === 'PUT' && r.path === '/v2/hello/manifests/1' && r.status === 201), 'the access log saw the manifest PUT');
  t.ok(log.some((r) => r.method === 'GET' && r.path === '/v2/hello/manifests/1' && r.status === 200));
});

t.test('registry with basic auth over TLS: creds needed, CA needed', { skip }, async (t) => {
  const reg = await startRegistry(t, { auth: 'basic' });
  t.match(reg.url, /^https:/);
  await pushImage(reg, hello, 'app/hello:1');
  t.equal((await inspect(reg, 'app/hello:1')).code, 0, 'inspect with credentials');
  const anon = await inspect(reg, 'app/hello:1', false);
  t.not(anon.code, 0, 'inspect without credentials fails');
  t.match(anon.stderr, /unauthorized|authentication required/i);
  const noCa = await curl([`${reg.url}/v2/`, '-u', `${reg.username}:${reg.password}`]);
  t.equal(noCa.code, 60, 'curl without the test CA refuses the certificate');
  const ok = await curl(['-o', '/dev/null', '-w', '%{http_code}', ...reg.curlFlags({ creds: true }), `${reg.url}/v2/`]);
  t.equal(ok.stdout, '200');
  t.ok(reg.requests().some((r) => r.status === 401), 'the access log saw the refusal');
});

t.test('registry with token auth over TLS: tokens, refusal without creds, refresh after expiry', { skip }, async (t) => {
  const reg = await startRegistry(t, { auth: 'token' });
  const digest = await pushImage(reg, hello, 'hello:1');
  t.ok(reg.tokenRequests() >= 1, 'skopeo fetched a token to push');
  const before = reg.tokenRequests();
  const raw = await inspect(reg, 'hello:1');
  t.equal(raw.code, 0, raw.stderr);
  t.equal(digestOf(raw.stdout), digest);
  t.ok(reg.tokenRequests() > before, 'inspect fetched a token');
  const anon = await inspect(reg, 'hello:1', false);
  t.not(anon.code, 0, 'inspect without credentials fails');
  t.ok(reg.tokenLog().some((r) => !r.granted), 'the token endpoint refused the anonymous request');

  // The dance by hand, with a token the registry refuses two to three seconds after issue.
  reg.setTokenTtl(2);
  const ca = reg.curlFlags();
  const challenge = await curl([...ca, '-D', '-', '-o', '/dev/null', `${reg.url}/v2/hello/manifests/1`]);
  const m = /www-authenticate: Bearer realm="([^"]+)",service="([^"]+)",scope="([^"]+)"/i.exec(challenge.stdout);
  t.ok(m, `a Bearer challenge: ${challenge.stdout}`);
  const getToken = async () => {
    const r = await curl([...ca, '-u', `${reg.username}:${reg.password}`, '-G', m![1]!, '--data-urlencode', `service=${m![2]}`, '--data-urlencode', `scope=${m![3]}`]);
    const body = JSON.parse(r.stdout) as { token: string; expires_in: number };
    t.equal(body.expires_in, 2);
    return body.token;
  };
  const status = async (token: string) =>
    (await curl([...ca, '-o', '/dev/null', '-w', '%{http_code}', '-H', `Authorization: Bearer ${token}`, '-H', 'Accept: application/vnd.oci.image.manifest.v1+json', `${reg.url}/v2/hello/manifests/1`])).stdout;
  const n0 = reg.tokenRequests();
  const first = await getToken();
  t.equal(await status(first), '200', 'a fresh token is accepted');
  const until = reg.lastTokenExpiresAt() + 5000;
  let s = '200';
  while (s === '200' && Date.now() < until) s = await status(first); // bounded: until the registry refuses it
  t.ok(Date.now() >= reg.lastTokenExpiresAt(), 'not refused before its lifetime');
  t.equal(s, '401', 'the expired token is refused');
  const second = await getToken();
  t.equal(await status(second), '200', 'a new token works');
  t.equal(reg.tokenRequests(), n0 + 2, 'the refresh is visible in tokenRequests()');
});

t.test('http source: GET, HEAD, ranges, If-Range, the request log, a cut of its own', { skip }, async (t) => {
  const src = await startHttpSource(t, { files: { '/blobs/one': blob } });
  const out = join(tempDir(t), 'got');
  const full = await curl(['-o', out, src.url('/blobs/one')]);
  t.equal(full.code, 0, full.stderr);
  t.equal(sha(readFileSync(out)), sha(blobData));
  const head = await curl(['-I', src.url('/blobs/one')]);
  t.match(head.stdout, /content-length: 1048576/i);
  t.match(head.stdout, /accept-ranges: bytes/i);
  const r = await curl(['-r', '1000-', '-o', out, '-D', '-', src.url('/blobs/one')]);
  t.match(r.stdout, /^HTTP\/1\.1 206/);
  t.match(r.stdout, /content-range: bytes 1000-1048575\/1048576/i);
  t.same(readFileSync(out), blobData.subarray(1000));
  const etag = /etag: (\S+)/i.exec(head.stdout)![1]!;
  const stale = await curl(['-r', '10-', '-H', 'If-Range: "other"', '-o', '/dev/null', '-w', '%{http_code}', src.url('/blobs/one')]);
  t.equal(stale.stdout, '200', 'If-Range that does not match: the whole body');
  const fresh = await curl(['-r', '10-', '-H', `If-Range: ${etag}`, '-o', '/dev/null', '-w', '%{http_code}', src.url('/blobs/one')]);
  t.equal(fresh.stdout, '206');
  t.equal((await curl(['-r', '2000000-', '-o', '/dev/null', '-w', '%{http_code}', src.url('/blobs/one')])).stdout, '416');
  t.equal((await curl(['-o', '/dev/null', '-w', '%{http_code}', src.url('/nothing')])).stdout, '404');
  const log = src.requests();
  t.same(log.slice(0, 3).map((q) => [q.method, q.range ?? null, q.status, q.bytesSent]), [
    ['GET', null, 200, 1 << 20],
    ['HEAD', null, 200, 0],
    ['GET', 'bytes=1000-', 206, (1 << 20) - 1000],
  ]);

  // A download cut by the source, resumed with a Range: the server sent the blob once, no more.
  const before = src.bytesServed('/blobs/one');
  src.cutNext('/blobs/one', 300_000);
  const part = join(tempDir(t), 'part');
  const cut = await curl(['-o', part, src.url('/blobs/one')]);
  t.equal(cut.code, 18, 'curl: partial file');
  t.equal(readFileSync(part).length, 300_000);
  const resumed = await curl(['-C', '-', '-o', part, src.url('/blobs/one')]);
  t.equal(resumed.code, 0, resumed.stderr);
  t.equal(sha(readFileSync(part)), sha(blobData));
  t.equal(src.requests().at(-1)!.range, 'bytes=300000-', 'the server saw the resume as a Range request');
  t.ok(src.bytesServed('/blobs/one') - before <= blobData.length + 64 * 1024, 'bytes served ≤ blob size + one chunk');
});

t.test('fault proxy over plain HTTP: cut, stall, flip, pass', { skip }, async (t) => {
  const src = await startHttpSource(t, { files: { '/b': blob } });
  const proxy = await startFaultProxy(t, { target: src.host });
  const url = `http://${proxy.host}:${proxy.port}/b`;
  const out = join(tempDir(t), 'out');

  proxy.cutAfter(10_000, { from: 'body', connection: proxy.next() });
  const cut = await curl(['-o', out, url]);
  t.equal(cut.code, 18, `cut: partial file (${cut.stderr.trim()})`);
  t.equal(readFileSync(out).length, 10_000, 'exactly 10000 body bytes arrived');
  const c1 = proxy.connections()[0]!;
  t.equal(c1.state, 'cut');
  t.equal(c1.bytesDown, c1.bodyStart! + 10_000, 'bytesDown = headers + 10000');

  const n = proxy.next();
  proxy.stallAfter(5000, { from: 'body', connection: n });
  const child: ChildProcess = spawn('curl', ['-sS', '--max-time', '20', '-o', out, url], { stdio: 'ignore' });
  const exited = new Promise<number | null>((res) => child.once('exit', (c) => res(c)));
  const stalled = await proxy.waitFor((c) => c.index === n && c.state === 'stalled', 10_000, 'the stall');
  t.equal(stalled.bytesDown, stalled.bodyStart! + 5000);
  t.equal(child.exitCode, null, 'curl still waits on the stalled connection');
  proxy.dropAll();
  t.equal(await exited, 18, 'dropping the stalled connection: partial file');

  proxy.flipByteAt(5, { from: 'body', connection: proxy.next() });
  t.equal((await curl(['-o', out, url])).code, 0);
  const got = readFileSync(out);
  t.equal(got.length, blobData.length);
  t.equal(got[5], blobData[5]! ^ 0xff, 'body byte 5 flipped');
  t.same(got.subarray(6), blobData.subarray(6));

  t.equal((await curl(['-o', out, url])).code, 0, 'later connections pass');
  t.equal(sha(readFileSync(out)), sha(blobData));
  t.same(proxy.connections().map((c) => c.state), ['cut', 'stalled', 'closed', 'closed']);
});

t.test('fault proxy over TLS: a relay end to end; cut truncates, flip breaks TLS', { skip }, async (t) => {
  const ca = await makeTestCa(join(tempDir(t), 'ca'));
  const src = await startHttpSource(t, { files: { '/b': blob }, tls: { cert: ca.serverCert, key: ca.serverKey } });
  const proxy = await startFaultProxy(t, { target: src.host });
  const url = `https://${proxy.host}:${proxy.port}/b`;
  t.equal((await curl(['--cacert', ca.caCert, '-o', '/dev/null', url])).code, 0, 'pass');
  proxy.cutAfter(50_000, { connection: proxy.next() });
  const cut = await curl(['--cacert', ca.caCert, '-o', '/dev/null', url]);
  t.not(cut.code, 0, `cut (${cut.code}: ${cut.stderr.trim()})`);
  proxy.flipByteAt(20_000, { connection: proxy.next() });
  const flip = await curl(['--cacert', ca.caCert, '-o', '/dev/null', url]);
  t.not(flip.code, 0, `flip (${flip.code}: ${flip.stderr.trim()})`);
  t.match(flip.stderr, /SSL|TLS|decrypt|mac/i);
});

t.test('everything inside a network namespace of its own (as smd runs in the sandbox)', { skip }, async (t) => {
  const holder = spawn('unshare', ['-n', 'sleep', 'infinity'], { stdio: 'ignore' });
  t.teardown(() => void holder.kill('SIGKILL'));
  const netnsPid = holder.pid!;
  // unshare execs sleep once the namespace exists: wait until its netns differs from ours.
  const mine = readlinkSync('/proc/self/ns/net');
  const until = Date.now() + 5000;
  while (readlinkSync(`/proc/${netnsPid}/ns/net`) === mine && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
  t.not(readlinkSync(`/proc/${netnsPid}/ns/net`), mine);
  const lo = await execBounded('nsenter', ['-t', String(netnsPid), '-n', 'ip', 'link', 'set', 'lo', 'up'], { timeoutMs: 5000 });
  t.equal(lo.code, 0, lo.stderr);

  const reg = await startRegistry(t, { auth: 'token', netnsPid });
  t.equal(reg.netnsPid, netnsPid);
  const digest = await pushImage(reg, hello, 'hello:1');
  const raw = await inspect(reg, 'hello:1');
  t.equal(raw.code, 0, raw.stderr);
  t.equal(digestOf(raw.stdout), digest);
  t.ok(reg.tokenRequests() >= 2, 'the token endpoint answered inside the namespace');
  const fromHost = await curl(['--cacert', reg.caCert!, `${reg.url}/v2/`]);
  t.not(fromHost.code, 0, 'the registry is not on the host loopback');

  const src = await startHttpSource(t, { files: { '/b': blob }, netnsPid });
  const proxy = await startFaultProxy(t, { target: src.host, netnsPid });
  proxy.cutAfter(1000, { from: 'body' });
  const cut = await curl(['-o', '/dev/null', '-w', '%{size_download}', `http://127.0.0.1:${proxy.port}/b`], { netnsPid });
  t.equal(cut.code, 18);
  t.equal(cut.stdout, '1000');
  proxy.pass();
  const r = await curl(['-r', '1048000-', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', `http://127.0.0.1:${proxy.port}/b`], { netnsPid });
  t.equal(r.stdout, '206 576');
  t.equal(src.requests().at(-1)!.range, 'bytes=1048000-');
});
