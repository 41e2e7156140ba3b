/**
 * The verification functions and the policy, against bundles made by sigstore-js (@sigstore/sign
 * with a key-based signer, no Fulcio/Rekor) and cosign-style simple-signing payloads.
 */
import t, { type Test } from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config/config.js';
import { isSmError } from '../../src/errors.js';
import { loadTrust, parsePublicKey, Trust } from '../../src/trust/policy.js';
import { pae, verifyBundle, verifySimpleSigning, type SignedSubject } from '../../src/trust/verify.js';
import { json, sha256 } from '../../scripts/images/oci.mjs';
import { dsseBundle, makeKey, messageBundle, rawSign, simpleSigningPayload, statementFor, writePem } from '../helpers/signing.js';

const p256 = makeKey('release-p256', 'ecdsa-p256');
const ed = makeKey('release-ed25519', 'ed25519');
const stranger = makeKey('stranger', 'ecdsa-p256');
/** An SmError with this code whose message matches. */
function throwsSm(t: Test, fn: () => unknown, code: string, re: RegExp, what?: string): unknown {
  try {
    fn();
  } catch (e) {
    t.ok(isSmError(e) && e.code === code && re.test(e.message), what ?? `${code} ${re}`, { got: e instanceof Error ? `${(e as { code?: string }).code}: ${e.message}` : e });
    return e;
  }
  t.fail(`${what ?? re}: nothing thrown`);
  return null;
}

const keys = [parsePublicKey(p256.id, p256.publicPem), parsePublicKey(ed.id, ed.publicPem)];

const manifest = json({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(Buffer.from('{}')), size: 2 }, layers: [] });
const subject: SignedSubject = { digest: sha256(manifest), bytes: manifest };
const other = json({ other: true });
const otherDigest = sha256(other);

t.test('DSSE bundles (in-toto statement) by P-256 and Ed25519 keys verify and name the key', async (t) => {
  for (const k of [p256, ed]) {
    const b = await dsseBundle(k, subject.digest);
    t.equal(b.mediaType, 'application/vnd.dev.sigstore.bundle.v0.3+json', 'sigstore-js writes a v0.3 bundle');
    t.match(verifyBundle(b, 'test', [subject], keys), { ok: true, keyId: k.id, form: 'dsse', digest: subject.digest }, k.algorithm);
  }
});

t.test('message-signature bundles over the manifest verify', async (t) => {
  for (const k of [p256, ed]) {
    const b = await messageBundle(k, manifest);
    t.match(verifyBundle(b, 'test', [subject], keys), { ok: true, keyId: k.id, form: 'message-signature' }, k.algorithm);
  }
  const wrong = await messageBundle(p256, other);
  const v = verifyBundle(wrong, 'test', [subject], keys);
  t.match(v, { ok: false, reason: new RegExp(`for ${otherDigest}, not for ${subject.digest}`) }, 'a message signature of another document is refused');
});

t.test('an unknown key, a tampered payload and another digest are refused, each with its reason', async (t) => {
  const unknown = verifyBundle(await dsseBundle(stranger, subject.digest), 'test', [subject], keys);
  t.match(unknown, { ok: false, form: 'dsse', reason: /does not verify with any trusted key \(release-p256, release-ed25519\)/ });

  const good = await dsseBundle(p256, subject.digest);
  const env = good.dsseEnvelope as { payload: string };
  const tampered = { ...good, dsseEnvelope: { ...env, payload: statementFor(otherDigest).toString('base64') } };
  t.match(verifyBundle(tampered, 'test', [subject], keys), { ok: false, reason: /does not verify/ }, 'payload swapped under a valid signature');
  const flipped = Buffer.from(env.payload, 'base64');
  flipped[flipped.length - 3] ^= 1;
  t.match(verifyBundle({ ...good, dsseEnvelope: { ...env, payload: flipped.toString('base64') } }, 'test', [subject], keys), { ok: false, reason: /does not verify/ }, 'one bit flipped');

  const elsewhere = verifyBundle(await dsseBundle(p256, otherDigest), 'test', [subject], keys);
  t.match(elsewhere, { ok: false, reason: new RegExp(`signed by release-p256 for ${otherDigest}, not for ${subject.digest}`) }, 'a valid signature of another image');

  t.match(verifyBundle({ mediaType: 'text/plain' }, 'x', [subject], keys), { ok: false, reason: /not a sigstore bundle/ });
  t.match(verifyBundle(null, 'x', [subject], keys), { ok: false, reason: /not a sigstore bundle/ });
  t.match(verifyBundle({ mediaType: good.mediaType }, 'x', [subject], keys), { ok: false, reason: /neither a DSSE envelope nor a message signature/ });
});

t.test('a DSSE envelope whose payload is not an in-toto statement is refused even when signed', async (t) => {
  const b = await dsseBundle(p256, subject.digest, json({ hello: 'world' }));
  t.match(verifyBundle(b, 'x', [subject], keys), { ok: false, reason: /not an in-toto statement/ });
});

t.test('PAE is DSSE v1', async (t) => {
  t.equal(pae('application/vnd.in-toto+json', Buffer.from('{}')).toString(), 'DSSEv1 28 application/vnd.in-toto+json 2 {}');
});

t.test('simple-signing payloads (cosign classic)', async (t) => {
  for (const k of [p256, ed]) {
    const payload = simpleSigningPayload(subject.digest);
    t.match(verifySimpleSigning(payload, rawSign(k, payload).toString('base64'), 's', [subject], keys), { ok: true, keyId: k.id, form: 'simple-signing' }, k.algorithm);
  }
  const payload = simpleSigningPayload(subject.digest);
  t.match(verifySimpleSigning(payload, rawSign(stranger, payload).toString('base64'), 's', [subject], keys), { ok: false, reason: /does not verify/ }, 'unknown key');
  const tampered = Buffer.from(payload.toString().replace(subject.digest, otherDigest));
  t.match(verifySimpleSigning(tampered, rawSign(p256, payload).toString('base64'), 's', [subject], keys), { ok: false, reason: /does not verify/ }, 'tampered payload');
  const otherPayload = simpleSigningPayload(otherDigest);
  t.match(verifySimpleSigning(otherPayload, rawSign(p256, otherPayload).toString('base64'), 's', [subject], keys), { ok: false, reason: new RegExp(`for ${otherDigest}`) }, 'another image');
  const capital = json({ critical: { identity: { 'docker-reference': 'x' }, image: { 'Docker-manifest-digest': subject.digest }, type: 'cosign container image signature' }, optional: {} });
  t.match(verifySimpleSigning(capital, rawSign(p256, capital).toString('base64'), 's', [subject], keys), { ok: true }, 'the key is matched regardless of case, as cosign does');
  t.match(verifySimpleSigning(payload, '', 's', [subject], keys), { ok: false, reason: /no base64 signature/ });
  t.match(verifySimpleSigning(payload, 'not base64!', 's', [subject], keys), { ok: false });
});

t.test('the policy decides: require, verify-if-present, off', async (t) => {
  const good = await dsseBundle(p256, subject.digest);
  const bad = await dsseBundle(stranger, subject.digest);
  const require = new Trust('require', keys);
  const present = new Trust('verify-if-present', keys);
  const decide = (tr: Trust, bundles: unknown[]) => tr.decide('img', [subject], tr.verify(bundles.map((b) => ({ kind: 'bundle' as const, source: 'src', bundle: b })), [subject]), ['somewhere']);

  t.equal(decide(require, [bad, good]), p256.id, 'one valid signature among others is enough');
  const none = throwsSm(t, () => decide(require, []), 'UNTRUSTED', /img \(sha256:[a-f0-9]{64}\) is not trusted under images\.trust\.policy "require": it carries no signature \(looked for: somewhere\)/);
  t.match((none as { details: unknown }).details, { image: 'img', policy: 'require', hint: /release-p256, release-ed25519/ });
  throwsSm(t, () => decide(require, [bad]), 'UNTRUSTED', /src: the signature does not verify/);
  t.equal(decide(present, []), null, 'verify-if-present: unsigned installs');
  t.equal(decide(present, [good]), p256.id);
  throwsSm(t, () => decide(present, [bad]), 'UNTRUSTED', /does not verify/, 'verify-if-present: a bad signature is refused');
  t.equal(decide(Trust.off(), [bad]), null, 'off: nothing checked');
});

t.test('keys and configuration', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'smd-trust-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const a = writePem(dir, p256);
  const b = writePem(dir, ed);
  const cfg = parseConfig({ images: { trust: { keys: [{ id: a.id, publicKey: a.path }, { id: b.id, publicKey: b.path }] } } });
  const trust = loadTrust(cfg.images.trust);
  t.same(trust.summary(), { policy: 'require', keys: [{ id: a.id, algorithm: 'ecdsa-p256' }, { id: b.id, algorithm: 'ed25519' }] }, 'require is the default with keys');
  t.equal(loadTrust(parseConfig({}).images.trust).policy, 'off', 'off without keys');
  t.equal(loadTrust({ keys: [{ id: a.id, publicKey: a.path }], policy: 'verify-if-present' }).policy, 'verify-if-present');

  const fails = (cfg: Parameters<typeof loadTrust>[0], re: RegExp, what: string) => throwsSm(t, () => loadTrust(cfg), 'INTERNAL', re, what);
  fails({ keys: [{ id: 'x', publicKey: join(dir, 'missing.pub') }] }, /images\.trust\.keys\.0\.publicKey.*cannot read .*missing\.pub: ENOENT/, 'a missing key file');
  writeFileSync(join(dir, 'junk.pub'), 'hello');
  fails({ keys: [{ id: 'x', publicKey: join(dir, 'junk.pub') }] }, /junk\.pub: not a PEM public key/, 'not PEM');
  writeFileSync(join(dir, 'rsa.pub'), generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }));
  fails({ keys: [{ id: 'x', publicKey: join(dir, 'rsa.pub') }] }, /a rsa key: only ECDSA P-256 and Ed25519/, 'an RSA key');
  writeFileSync(join(dir, 'p384.pub'), generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).publicKey.export({ type: 'spki', format: 'pem' }));
  fails({ keys: [{ id: 'x', publicKey: join(dir, 'p384.pub') }] }, /an EC key on secp384r1/, 'a P-384 key');
  fails({ keys: [], policy: 'require' }, /"images\.trust\.policy": "require" needs at least one key/, 'require without keys');

  t.throws(() => parseConfig({ images: { trust: { keys: [{ id: 'a', publicKey: a.path }, { id: 'a', publicKey: b.path }] } } }), /key ids must be unique/);
  t.throws(() => parseConfig({ images: { trust: { policy: 'sometimes' } } }), /images\.trust\.policy/);
  t.throws(() => parseConfig({ images: { trust: { keys: [{ id: 'a', publicKey: 'relative.pub' }] } } }), /absolute path/);
  t.throws(() => parseConfig({ images: { trust: { key: [] } } }), /unknown key "images\.trust\.key"/);
});
