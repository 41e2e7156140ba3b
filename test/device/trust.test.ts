/**
 * Signatures on a booted device with the shipped unit: the operator pins a key in
 * /etc/smd/smd.json (images.trust) and restarts smd; `smctl services install` of an unsigned
 * archive fails with UNTRUSTED and leaves nothing; the same image with a sigstore bundle (DSSE,
 * made by sigstore-js) as an OCI referrer inside its layout installs, runs and shows signedBy.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readImageDocuments } from '../../src/images/reader.js';
import { writeArchive } from '../../scripts/images/oci.mjs';
import { buildExampleImages } from '../helpers/daemon.js';
import { startDevice } from '../helpers/device.js';
import { addToLayout, dsseBundle, makeKey, referrerManifest, writePem } from '../helpers/signing.js';

interface Op {
  state: string;
  error: { code: string; message: string } | null;
}

const work = mkdtempSync(join(tmpdir(), 'smd-device-trust-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const unsigned = buildExampleImages(join(work, 'images'), ['--version', '1']).byName['writer-v1']!;
const key = writePem(work, makeKey('fleet-release', 'ed25519'));

// The same image with a signature as a referrer in its layout.
const unpacked = join(work, 'unpacked');
mkdirSync(unpacked);
execFileSync('tar', ['-xf', unsigned, '-C', unpacked]);
const files = ['oci-layout', 'index.json'].map((p) => ({ path: p, data: readFileSync(join(unpacked, p)) }));
for (const name of readdirSync(join(unpacked, 'blobs/sha256'))) files.push({ path: `blobs/sha256/${name}`, data: readFileSync(join(unpacked, 'blobs/sha256', name)) });
const subject = (await readImageDocuments(unsigned)).subjects[0]!;
const referrer = referrerManifest(await dsseBundle(key, subject.digest), { digest: subject.digest, size: subject.bytes.length });
const signed = writeArchive(join(work, 'writer-signed.tar'), addToLayout(files, [{ artifact: referrer, list: { artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json' } }]));

const device = await startDevice(t);
device.copyIn(unsigned, '/opt/images/writer-unsigned.tar');
device.copyIn(signed, '/opt/images/writer-signed.tar');
device.copyIn(key.path, '/etc/smd/keys/fleet-release.pem');
await device.run('tee', ['/etc/smd/smd.json'], { input: JSON.stringify({ images: { trust: { keys: [{ id: 'fleet-release', publicKey: '/etc/smd/keys/fleet-release.pem' }] } } }) });
await device.run('systemctl', ['restart', 'smd']);
await device.waitActive('smd');
const c = await device.client();

t.test('the policy in force is shown', async (t) => {
  t.match(await c.call('system.info'), { trust: { policy: 'require', keys: [{ id: 'fleet-release', algorithm: 'ed25519' }] } });
});

t.test('an unsigned archive is UNTRUSTED and leaves nothing', async (t) => {
  const r = await device.exec('smctl', ['--json', 'services', 'install', '/opt/images/writer-unsigned.tar'], { timeoutMs: 60_000 });
  t.not(r.code, 0, 'smctl fails');
  t.match(r.stdout + r.stderr, /UNTRUSTED/);
  await t.rejects(c.call('services.get', { id: 'writer' }), { code: 'NOT_FOUND' });
  t.same(await c.call('layers.list'), [], 'no layer was unpacked');
  t.equal((await device.exec('test', ['-e', '/run/systemd/system/smd-writer.service'])).code, 1, 'no unit was written');
});

t.test('the signed archive installs, runs and shows who signed it', async (t) => {
  const op = await device.smctl<Op>(['services', 'install', '/opt/images/writer-signed.tar'], { timeoutMs: 60_000 });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  t.match(await c.call('services.get', { id: 'writer' }), { signedBy: 'fleet-release', state: 1, live: { activeState: 'active' } });
  await device.waitActive('smd-writer.service');
});
