/**
 * Signature checks in ImageSources.resolve, before anything is fetched or unpacked: OCI archives
 * with referrers (listed in index.json, or only among the blobs) and cosign `.sig` tags, a bundle
 * given beside the image, a URL archive dropped when refused, and a real registry (Debian's
 * docker-registry 2.8, anonymous, on the host's loopback) holding referrers and `.sig` tags pushed
 * with node:http. Policies require, verify-if-present and off.
 */
import t, { type Test } from 'tap';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isSmError } from '../../src/errors.js';
import { ImageSources, type ImageRef } from '../../src/images/sources.js';
import { DEFAULT_IMAGE_LIMITS } from '../../src/images/types.js';
import { createLogger } from '../../src/log.js';
import { loadTrust, Trust } from '../../src/trust/policy.js';
import { gzip, imageLayout, json, sha256, tarBuffer, writeArchive } from '../../scripts/images/oci.mjs';
import { netDoor } from '../helpers/fault-proxy.js';
import { startHttpSource } from '../helpers/http-source.js';
import { pushImage, startRegistry } from '../helpers/registry.js';
import {
  addToLayout,
  dsseBundle,
  getManifest,
  makeKey,
  messageBundle,
  pushArtifact,
  putManifest,
  referrerManifest,
  referrersIndex,
  registryStatus,
  simpleSigningManifest,
  writePem,
} from '../helpers/signing.js';

const dir = mkdtempSync(join(tmpdir(), 'smd-trust-src-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const p256 = writePem(dir, makeKey('release-p256', 'ecdsa-p256'));
const ed = writePem(dir, makeKey('release-ed25519', 'ed25519'));
const stranger = makeKey('stranger', 'ecdsa-p256');
const trustCfg = { keys: [p256, ed].map((k) => ({ id: k.id, publicKey: k.path })) };

const logs: string[] = [];
const logger = createLogger('debug', (l) => void logs.push(l));
const layer = gzip(tarBuffer([{ path: 'hello.txt', data: 'hello\n', mode: 0o644 }]));

/** An image's layout files; `name` makes its manifest (and digest) its own. */
function image(name: string) {
  return imageLayout({ layers: [{ data: layer }], config: { Entrypoint: ['/bin/sh'] }, annotations: { 'io.smd.id': name, 'io.smd.version': '1' } });
}

function archive(name: string, files: { path: string; data: Buffer }[]): string {
  return writeArchive(join(dir, `${name}.tar`), files);
}

async function sources(trust: Trust, extra: Partial<ConstructorParameters<typeof ImageSources>[0]> = {}): Promise<ImageSources> {
  const dataDir = mkdtempSync(join(dir, 'data-'));
  const s = new ImageSources({ dataDir, limits: DEFAULT_IMAGE_LIMITS, reserveBytes: 0, hasLayer: () => false, logger, trust, backoff: { initialMs: 10, maxMs: 50 }, downloads: { retries: 1 }, ...extra });
  t.teardown(() => s.close());
  await s.reconcile();
  return s;
}

async function refused(t: Test, p: Promise<unknown>, re: RegExp, what: string): Promise<void> {
  try {
    await p;
    t.fail(`${what}: resolved`);
  } catch (e) {
    t.ok(isSmError(e, 'UNTRUSTED') && re.test(e.message), what, { got: e instanceof Error ? `${(e as { code?: string }).code}: ${e.message}` : e });
  }
}

const require = loadTrust(trustCfg);

t.test('OCI archives: referrers in index.json or only among the blobs, and .sig tags', async (t) => {
  const src = await sources(require);
  const a = image('listed');
  const listed = archive('listed', addToLayout(a.files, [{ artifact: referrerManifest(await dsseBundle(p256, a.manifestDigest), { digest: a.manifestDigest, size: json(a.manifest).length }), list: { artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json' } }]));
  const r1 = await src.resolve({ image: listed });
  t.equal(r1.signedBy, 'release-p256', 'a DSSE bundle as a referrer listed in index.json');
  t.equal(r1.info.manifestDigest, a.manifestDigest, 'the image is chosen, not the referrer listed beside it');

  const b = image('blob-only');
  const blobOnly = archive('blob-only', addToLayout(b.files, [{ artifact: referrerManifest(await dsseBundle(ed, b.manifestDigest), { digest: b.manifestDigest, size: json(b.manifest).length }) }]));
  t.equal((await src.resolve({ image: blobOnly })).signedBy, 'release-ed25519', 'an Ed25519 referrer present only as a blob');

  const c = image('sig-tag');
  const sigTag = archive('sig-tag', addToLayout(c.files, [{ artifact: simpleSigningManifest(p256, c.manifestDigest), list: { refName: `sha256-${c.manifestDigest.slice(7)}.sig` } }]));
  const r3 = await src.resolve({ image: sigTag });
  t.equal(r3.signedBy, 'release-p256', "cosign's classic .sig manifest");
  t.equal(r3.info.manifestDigest, c.manifestDigest);
});

t.test('OCI archives refused: unsigned, unknown key, tampered, another image', async (t) => {
  const src = await sources(require);
  const u = image('unsigned');
  await refused(t, src.resolve({ image: archive('unsigned', u.files) }), /is not trusted under images\.trust\.policy "require": it carries no signature \(looked for: OCI referrers and sha256-[a-f0-9]{64}\.sig in the archive\)/, 'unsigned');

  const k = image('stranger');
  const ref = { digest: k.manifestDigest, size: json(k.manifest).length };
  await refused(t, src.resolve({ image: archive('stranger', addToLayout(k.files, [{ artifact: referrerManifest(await dsseBundle(stranger, k.manifestDigest), ref) }])) }), /does not verify with any trusted key/, 'signed by an unknown key');

  const good = await dsseBundle(p256, k.manifestDigest);
  const env = good.dsseEnvelope as { payload: string };
  const statement = Buffer.from(env.payload, 'base64');
  const tampered = { ...good, dsseEnvelope: { ...env, payload: Buffer.from(statement.toString().replace('"predicate":{}', '"predicate":{"x":1}')).toString('base64') } };
  await refused(t, src.resolve({ image: archive('tampered', addToLayout(k.files, [{ artifact: referrerManifest(tampered, ref) }])) }), /does not verify/, 'payload tampered');

  const other = image('other');
  const forOther = await dsseBundle(p256, other.manifestDigest);
  await refused(t, src.resolve({ image: archive('for-other', addToLayout(k.files, [{ artifact: referrerManifest(forOther, ref) }])) }), new RegExp(`signed by release-p256 for ${other.manifestDigest}, not for ${k.manifestDigest}`), 'a valid signature of another image, attached to this one');
  await refused(t, src.resolve({ image: archive('sig-other', addToLayout(k.files, [{ artifact: simpleSigningManifest(p256, other.manifestDigest), list: { refName: `sha256-${k.manifestDigest.slice(7)}.sig` } }])) }), /signed by release-p256 for sha256:/, 'a .sig of another image');
});

t.test('a bundle given beside the image: object or file, DSSE or message signature', async (t) => {
  const src = await sources(require);
  const img = image('beside');
  const path = archive('beside', img.files);
  t.equal((await src.resolve({ image: path, signature: await dsseBundle(ed, img.manifestDigest) })).signedBy, 'release-ed25519', 'a DSSE bundle object');
  const file = join(dir, 'beside.sigstore.json');
  writeFileSync(file, JSON.stringify(await messageBundle(p256, json(img.manifest))));
  t.equal((await src.resolve({ image: path, signature: file })).signedBy, 'release-p256', 'a message-signature bundle in a file');
  await refused(t, src.resolve({ image: path, signature: await dsseBundle(stranger, img.manifestDigest) }), /the request's signature: the signature does not verify/, 'a bad bundle beside an unsigned archive');
  await t.rejects(src.resolve({ image: path, signature: join(dir, 'missing.json') }), { code: 'INVALID_IMAGE', message: /cannot read the signature file .*missing\.json: ENOENT/ });
});

t.test('verify-if-present installs unsigned images but refuses a bad signature; off checks nothing', async (t) => {
  const present = await sources(loadTrust({ ...trustCfg, policy: 'verify-if-present' }));
  const u = image('present-unsigned');
  t.equal((await present.resolve({ image: archive('present-unsigned', u.files) })).signedBy, null, 'unsigned: installs, signedBy null');
  const ref = { digest: u.manifestDigest, size: json(u.manifest).length };
  await refused(t, present.resolve({ image: archive('present-bad', addToLayout(u.files, [{ artifact: referrerManifest(await dsseBundle(stranger, u.manifestDigest), ref) }])) }), /verify-if-present.*does not verify/, 'a bad signature is refused');
  t.equal((await present.resolve({ image: archive('present-good', addToLayout(u.files, [{ artifact: referrerManifest(await dsseBundle(p256, u.manifestDigest), ref) }])) })).signedBy, 'release-p256');

  const off = await sources(Trust.off());
  t.equal((await off.resolve({ image: archive('off-bad', addToLayout(u.files, [{ artifact: referrerManifest(await dsseBundle(stranger, u.manifestDigest), ref) }])) })).signedBy, null, 'off: not even a bad signature is looked at');
});

t.test('a URL archive refused leaves no download behind', async (t) => {
  const img = image('url');
  const path = archive('url', img.files);
  const http = await startHttpSource(t, { files: { '/url.tar': path } });
  const src = await sources(require, { registries: { [http.host]: { insecure: true } } });
  const { readFileSync } = await import('node:fs');
  const ref: ImageRef = { image: http.url('/url.tar'), digest: sha256(readFileSync(path)) };
  await refused(t, src.resolve(ref), /carries no signature/, 'unsigned URL archive');
  t.same(existsSync(src.downloadDir) ? readdirSync(src.downloadDir) : [], [], 'the downloaded archive was dropped');
  const ok = await src.resolve({ ...ref, signature: await dsseBundle(p256, img.manifestDigest) });
  t.equal(ok.signedBy, 'release-p256', 'the same archive with its bundle beside it (the desired state\'s "signature")');
  await src.release(ok.info);
});

t.test('a registry: referrers found through the referrers tag, .sig tags, and refusals before any blob', async (t) => {
  const reg = await startRegistry(t);
  const target = { host: reg.host, door: netDoor(t, {}) };
  const src = await sources(require, { registries: { [reg.host]: { insecure: true } } });
  const push = async (name: string) => {
    const img = image(`reg-${name}`);
    const path = archive(`reg-${name}`, img.files);
    const digest = await pushImage(reg, path, `${name}:1`);
    return { digest, manifest: await getManifest(target, name, digest), layers: img.layers.map((l) => l.digest) };
  };

  // OCI 1.1 referrer: the manifest (with subject) and the referrers-tag index, as cosign does for a registry without the API.
  const a = await push('referred');
  t.equal(sha256(a.manifest), a.digest);
  const referrer = referrerManifest(await dsseBundle(p256, a.digest), { digest: a.digest, size: a.manifest.length });
  await pushArtifact(target, 'referred', referrer);
  const api = await registryStatus(target, `/v2/referred/referrers/${a.digest}`);
  t.comment(`docker-registry 2.8 answers GET /v2/<repo>/referrers/<digest> with HTTP ${api} (no referrers API: the referrers tag is the way)`);
  t.equal(api, 404, 'distribution 2.8 has no referrers API');
  await putManifest(target, 'referred', `sha256-${a.digest.slice(7)}`, referrersIndex([referrer]), 'application/vnd.oci.image.index.v1+json');
  const before = reg.requests().length;
  const r = await src.resolve({ image: `docker://${reg.host}/referred:1` });
  t.equal(r.signedBy, 'release-p256', 'the referrer, found through the referrers tag, is accepted');
  const asked = reg.requests().slice(before).map((q) => `${q.method} ${q.path} ${q.status}`);
  t.ok(asked.includes(`GET /v2/referred/referrers/${a.digest} 404`), 'the referrers API was asked first');
  t.ok(asked.includes(`GET /v2/referred/manifests/sha256-${a.digest.slice(7)} 200`), 'then the referrers tag');
  t.notOk(asked.some((q) => a.layers.some((l) => q.includes(l))), 'no layer blob was fetched by resolve');
  await src.release(r.info);

  // cosign classic: tag sha256-<hex>.sig.
  const b = await push('classic');
  await pushArtifact(target, 'classic', simpleSigningManifest(ed, b.digest), `sha256-${b.digest.slice(7)}.sig`);
  const rb = await src.resolve({ image: `docker://${reg.host}/classic:1` });
  t.equal(rb.signedBy, 'release-ed25519', 'an Ed25519 simple signing under sha256-<hex>.sig');
  await src.release(rb.info);

  // A valid signature of another image, attached as this one's referrer: refused, nothing fetched.
  const c = await push('misattached');
  const wrong = referrerManifest(await dsseBundle(p256, a.digest), { digest: c.digest, size: c.manifest.length });
  await pushArtifact(target, 'misattached', wrong);
  await putManifest(target, 'misattached', `sha256-${c.digest.slice(7)}`, referrersIndex([wrong]), 'application/vnd.oci.image.index.v1+json');
  const mark = reg.requests().length;
  await refused(t, src.resolve({ image: `docker://${reg.host}/misattached:1` }), new RegExp(`signed by release-p256 for ${a.digest}, not for ${c.digest}`), 'a signature of another digest');
  t.notOk(reg.requests().slice(mark).some((q) => c.layers.some((l) => q.path.includes(l))), 'no layer was fetched');
  t.same(existsSync(src.downloadDir) ? readdirSync(src.downloadDir) : [], [], 'nothing left in downloads');

  // Nothing at all.
  await push('bare');
  await refused(t, src.resolve({ image: `docker://${reg.host}/bare:1` }), /carries no signature \(looked for: the referrers tag sha256-[a-f0-9]{64} in 127\.0\.0\.1:\d+\/bare; the tag sha256-[a-f0-9]{64}\.sig in/, 'unsigned in the registry');
});
