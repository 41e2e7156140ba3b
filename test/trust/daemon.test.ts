/**
 * Signatures through the whole daemon on the sandboxed stack (images.trust with a P-256 and an
 * Ed25519 key, policy require): a signed archive (its referrer inside the layout) installs and
 * services.get / smctl show signedBy; an unsigned one fails with UNTRUSTED and leaves nothing
 * (no service, no layer, no download); a pull from the local registry where the signature lives as
 * a referrer (docker-registry 2.8 has no referrers API: found through the referrers tag);
 * system.info shows the policy; a desired state with one untrusted image changes nothing; a key
 * file that is missing stops the start.
 */
import t from 'tap';
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RpcClient } from '../../src/cli/client.js';
import { readImageDocuments } from '../../src/images/reader.js';
import { writeArchive } from '../../scripts/images/oci.mjs';
import { buildExampleImages, SMCTL, startDaemon, tempDir, writeConfig, DAEMON } from '../helpers/daemon.js';
import { netDoor } from '../helpers/fault-proxy.js';
import { pushImage, startRegistry } from '../helpers/registry.js';
import { startSandbox } from '../helpers/sandbox.js';
import { addToLayout, dsseBundle, getManifest, makeKey, pushArtifact, putManifest, referrerManifest, referrersIndex, writePem } from '../helpers/signing.js';

interface Op {
  state: string;
  error: { code: string; message: string } | null;
}

const sb = await startSandbox(t);
const dir = tempDir(t, 'smd-trust-daemon-');
const img = buildExampleImages(join(dir, 'images')).byName;
const keysDir = join(dir, 'keys');
mkdirSync(keysDir);
const p256 = writePem(keysDir, makeKey('release-p256', 'ecdsa-p256'));
const ed = writePem(keysDir, makeKey('release-ed25519', 'ed25519'));

/** The files of an OCI archive (as the example builder wrote it), to add a referrer to. */
function layoutFiles(archive: string): { path: string; data: Buffer }[] {
  const out = join(dir, `unpacked-${Math.random().toString(36).slice(2)}`);
  mkdirSync(out);
  execFileSync('tar', ['-xf', archive, '-C', out]);
  const files = ['oci-layout', 'index.json'].map((p) => ({ path: p, data: readFileSync(join(out, p)) }));
  for (const name of readdirSync(join(out, 'blobs/sha256'))) files.push({ path: `blobs/sha256/${name}`, data: readFileSync(join(out, 'blobs/sha256', name)) });
  return files;
}

const base = img['hello-http-v1']!;
const docs = await readImageDocuments(base);
const subject = docs.subjects[0]!;
const signedArchive = writeArchive(
  join(dir, 'hello-signed.tar'),
  addToLayout(layoutFiles(base), [{ artifact: referrerManifest(await dsseBundle(p256, subject.digest), { digest: subject.digest, size: subject.bytes.length }), list: { artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json' } }]),
);

const reg = await startRegistry(t, { sandbox: sb });
const target = { host: reg.host, door: netDoor(t, { sandbox: sb }) };
const pushed = await pushImage(reg, img['writer-v1']!, 'writer:1');
const pushedManifest = await getManifest(target, 'writer', pushed);
const referrer = referrerManifest(await dsseBundle(ed, pushed), { digest: pushed, size: pushedManifest.length });
await pushArtifact(target, 'writer', referrer);
await putManifest(target, 'writer', `sha256-${pushed.slice(7)}`, referrersIndex([referrer]), 'application/vnd.oci.image.index.v1+json');
await pushImage(reg, img['hello-http-v2']!, 'unsigned:2');

const trust = { keys: [p256, ed].map((k) => ({ id: k.id, publicKey: k.path })) };
const daemon = await startDaemon(t, { sandbox: sb, config: { images: { trust }, registries: { [reg.host]: { insecure: true } } } });
const c: RpcClient = await daemon.client();
const install = (params: Record<string, unknown>) => c.call<Op>('services.install', { ...params, wait: true });

function smctl(...args: string[]): Promise<{ code: number | null; stdout: string }> {
  return new Promise((res) => {
    const p = spawn(process.execPath, [SMCTL, '--socket', daemon.socket, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    p.stdout!.on('data', (d) => (stdout += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), 20_000);
    p.once('exit', (code) => (clearTimeout(timer), res({ code, stdout })));
  });
}

t.test('system.info shows the policy and the key ids', async (t) => {
  t.match(await c.call('system.info'), { trust: { policy: 'require', keys: [{ id: 'release-p256', algorithm: 'ecdsa-p256' }, { id: 'release-ed25519', algorithm: 'ed25519' }] } });
  t.match((await smctl('info')).stdout, /trust:\s+require \(keys: release-p256, release-ed25519\)/);
});

t.test('an unsigned archive is refused with UNTRUSTED and leaves nothing behind', async (t) => {
  const layersBefore = await c.call<unknown[]>('layers.list');
  const op = await install({ image: base });
  t.equal(op.state, 'failed');
  t.equal(op.error?.code, 'UNTRUSTED', op.error?.message);
  t.match(op.error?.message, /carries no signature/);
  await t.rejects(c.call('services.get', { id: 'hello-http' }), { code: 'NOT_FOUND' }, 'no service');
  t.same(await c.call('layers.list'), layersBefore, 'no layer was unpacked');
  const r = await smctl('services', 'install', base);
  t.not(r.code, 0, 'smctl fails');
});

t.test('a signed archive installs; services.get and smctl show signedBy', async (t) => {
  const op = await install({ image: signedArchive });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  t.match(await c.call('services.get', { id: 'hello-http' }), { signedBy: 'release-p256', state: 1 });
  t.match((await smctl('services', 'get', 'hello-http')).stdout, /signedBy:\s+release-p256/);
  t.match(JSON.parse((await smctl('--json', 'services', 'get', 'hello-http')).stdout), { signedBy: 'release-p256' });
});

t.test('a pull from the registry where the signature is a referrer (found through the referrers tag)', async (t) => {
  const op = await install({ image: `docker://${reg.host}/writer:1`, id: 'writer', version: 1 });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  t.match(await c.call('services.get', { id: 'writer' }), { signedBy: 'release-ed25519' });
  const asked = reg.requests().map((q) => `${q.method} ${q.path} ${q.status}`);
  t.ok(asked.includes(`GET /v2/writer/referrers/${pushed} 404`) && asked.includes(`GET /v2/writer/manifests/sha256-${pushed.slice(7)} 200`), 'referrers API (404), then the referrers tag');

  const bad = await install({ image: `docker://${reg.host}/unsigned:2`, id: 'unsigned', version: 2 });
  t.equal(bad.error?.code, 'UNTRUSTED', bad.error?.message);
  const layers = (JSON.parse((await getManifest(target, 'unsigned', '2')).toString()) as { layers: { digest: string }[] }).layers.map((l) => l.digest);
  t.notOk(reg.requests().some((q) => q.method === 'GET' && layers.some((l) => q.path.endsWith(`/blobs/${l}`))), 'not one layer of the refused image was fetched (only its manifest and config were read)');
  const downloads = await sb.run('sh', ['-c', `ls -A ${join(daemon.dir, 'data/downloads/sha256')} | wc -l`]);
  t.equal(downloads.trim(), '0', 'nothing in downloads');
});

t.test('a desired state with one untrusted image changes nothing', async (t) => {
  const before = { services: await c.call('services.list'), layers: await c.call('layers.list') };
  const op = await c.call<Op & { error: { details?: { items?: { id: string; outcome: string }[] } } | null }>('state.apply', {
    desired: {
      version: 1,
      services: [
        { id: 'hello-http', version: 1, image: signedArchive },
        { id: 'writer', version: 1, image: `docker://${reg.host}/writer:1` },
        { id: 'intruder', version: 2, image: `docker://${reg.host}/unsigned:2` },
      ],
      layers: [],
    },
    wait: true,
  });
  t.equal(op.state, 'failed');
  t.match(op.error, { code: 'UNTRUSTED', message: /intruder/ });
  t.same(await c.call('services.list'), before.services, 'no service changed');
  t.same(await c.call('layers.list'), before.layers, 'no layer added');
});

t.test('a missing key file stops the start with a message naming it', async (t) => {
  const d = tempDir(t, 'smd-trust-bad-');
  const cfg = writeConfig(d, { images: { trust: { keys: [{ id: 'gone', publicKey: join(d, 'gone.pub') }] } } });
  const r = await new Promise<{ code: number | null; err: string }>((res) => {
    const p = spawn(process.execPath, [DAEMON, '--config', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr!.on('data', (x) => (err += x));
    const timer = setTimeout(() => p.kill('SIGKILL'), 20_000);
    p.once('exit', (code) => (clearTimeout(timer), res({ code, err })));
  });
  t.not(r.code, 0);
  t.match(r.err, /invalid configuration: "images\.trust\.keys\.0\.publicKey": cannot read .*gone\.pub: ENOENT/);
});

