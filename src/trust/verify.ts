/**
 * Offline verification of image signatures against pinned public keys (SPEC 13), on node:crypto
 * alone: no transparency log, no certificate authority, no network. Pure functions.
 *
 * Accepted forms, as cosign and sigstore-js write them:
 * - a sigstore bundle (v0.3; v0.1/v0.2 read the same way) holding either
 *   - a DSSE envelope whose payload is an in-toto statement (v0.1 or v1) with the image manifest
 *     among its subjects (`digest.sha256`); the signature is over DSSE's PAE of type and payload, or
 *   - a message signature whose message is the manifest itself (`messageDigest` its sha256);
 * - a simple-signing payload (`critical.image.docker-manifest-digest`) with its detached signature,
 *   as cosign's classic `sha256-<hex>.sig` manifests carry it.
 *
 * What the bundle says about its key (`verificationMaterial`) is input like any other: each pinned
 * key is tried, and the first that verifies is who signed. A valid signature is not enough: what
 * it signed must name the manifest being installed (a valid signature of another image is refused).
 * ECDSA P-256 signatures are ASN.1 DER over SHA-256; Ed25519 signs the message itself.
 */
import { createHash, verify as cryptoVerify, type KeyObject } from 'node:crypto';

export interface TrustedKey {
  id: string;
  key: KeyObject;
  algorithm: 'ecdsa-p256' | 'ed25519';
}

/** A document a signature may name: the image manifest (or the index that chose it), with its bytes. */
export interface SignedSubject {
  digest: string;
  /** The document's bytes (a message signature signs them). */
  bytes: Buffer;
}

/** A signature found for an image, not yet verified; `source` says where, for messages. */
export type SignatureCandidate =
  | { kind: 'bundle'; source: string; bundle: unknown }
  | { kind: 'simple-signing'; source: string; payload: Buffer; signature: string };

export type SignatureForm = 'dsse' | 'message-signature' | 'simple-signing';

export type Verdict =
  | { ok: true; source: string; form: SignatureForm; keyId: string; digest: string }
  | { ok: false; source: string; form: SignatureForm | null; reason: string };

export const BUNDLE_MEDIA_TYPES: ReadonlySet<string> = new Set([
  'application/vnd.dev.sigstore.bundle.v0.3+json',
  'application/vnd.dev.sigstore.bundle+json;version=0.3',
  'application/vnd.dev.sigstore.bundle+json;version=0.2',
  'application/vnd.dev.sigstore.bundle+json;version=0.1',
]);
export const SIMPLE_SIGNING_MEDIA_TYPE = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const COSIGN_SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
const IN_TOTO_PAYLOAD_TYPE = 'application/vnd.in-toto+json';
const IN_TOTO_STATEMENTS = new Set(['https://in-toto.io/Statement/v0.1', 'https://in-toto.io/Statement/v1']);
const SIMPLE_SIGNING_TYPES = new Set(['cosign container image signature', 'atomic container signature']);

/** DSSE's pre-authentication encoding: `DSSEv1 <len(type)> <type> <len(body)> <body>`. */
export function pae(payloadType: string, payload: Buffer): Buffer {
  const type = Buffer.from(payloadType, 'utf8');
  return Buffer.concat([Buffer.from(`DSSEv1 ${type.length} `), type, Buffer.from(` ${payload.length} `), payload]);
}

/** Whether `signature` over `data` verifies with `k`. Malformed signatures are simply false. */
export function verifyWith(k: TrustedKey, data: Buffer, signature: Buffer): boolean {
  try {
    return k.algorithm === 'ed25519' ? cryptoVerify(null, data, k.key, signature) : cryptoVerify('sha256', data, k.key, signature);
  } catch {
    // OpenSSL rejects some malformed DER outright instead of answering false.
    return false;
  }
}

/** The first key that verifies, or null. */
function signer(keys: readonly TrustedKey[], data: Buffer, signature: Buffer): TrustedKey | null {
  for (const k of keys) if (verifyWith(k, data, signature)) return k;
  return null;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const B64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

function base64(v: unknown): Buffer | null {
  if (typeof v !== 'string' || !B64.test(v)) return null;
  return Buffer.from(v, 'base64');
}

const sha256Of = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function noKey(keys: readonly TrustedKey[]): string {
  return keys.length === 0 ? 'no trusted keys are configured' : `the signature does not verify with any trusted key (${keys.map((k) => k.id).join(', ')}): signed by another key, or the signed content was altered`;
}

function names(subjects: readonly SignedSubject[]): string {
  return subjects.map((s) => s.digest).join(' or ');
}

/** Verifies one candidate against the keys and the subjects (the manifest being installed). */
export function verifyCandidate(c: SignatureCandidate, subjects: readonly SignedSubject[], keys: readonly TrustedKey[]): Verdict {
  return c.kind === 'bundle' ? verifyBundle(c.bundle, c.source, subjects, keys) : verifySimpleSigning(c.payload, c.signature, c.source, subjects, keys);
}

export function verifyBundle(bundle: unknown, source: string, subjects: readonly SignedSubject[], keys: readonly TrustedKey[]): Verdict {
  const bad = (reason: string, form: SignatureForm | null = null): Verdict => ({ ok: false, source, form, reason });
  if (!isObject(bundle)) return bad('not a sigstore bundle (not a JSON object)');
  if (typeof bundle.mediaType !== 'string' || !BUNDLE_MEDIA_TYPES.has(bundle.mediaType)) return bad(`not a sigstore bundle (mediaType ${JSON.stringify(bundle.mediaType ?? null)})`);
  if (isObject(bundle.dsseEnvelope)) {
    const env = bundle.dsseEnvelope;
    const form = 'dsse';
    const payload = base64(env.payload);
    if (!payload || typeof env.payloadType !== 'string' || !Array.isArray(env.signatures) || env.signatures.length === 0) return bad('malformed DSSE envelope (payload, payloadType, signatures)', form);
    const signed = pae(env.payloadType, payload);
    let key: TrustedKey | null = null;
    for (const s of env.signatures) {
      const sig = isObject(s) ? base64(s.sig) : null;
      if (sig && (key = signer(keys, signed, sig))) break;
    }
    if (!key) return bad(noKey(keys), form);
    if (env.payloadType !== IN_TOTO_PAYLOAD_TYPE) return bad(`signed by ${key.id}, but the DSSE payload is ${env.payloadType}, not an in-toto statement`, form);
    let statement: unknown;
    try {
      statement = JSON.parse(payload.toString('utf8'));
    } catch {
      return bad(`signed by ${key.id}, but the in-toto statement is not JSON`, form);
    }
    if (!isObject(statement) || typeof statement._type !== 'string' || !IN_TOTO_STATEMENTS.has(statement._type) || !Array.isArray(statement.subject)) {
      return bad(`signed by ${key.id}, but the payload is not an in-toto statement with subjects`, form);
    }
    const named = statement.subject.flatMap((s) => (isObject(s) && isObject(s.digest) && typeof s.digest.sha256 === 'string' ? [`sha256:${s.digest.sha256.toLowerCase()}`] : []));
    const hit = subjects.find((s) => named.includes(s.digest));
    if (!hit) return bad(`signed by ${key.id} for ${named.join(', ') || 'no sha256 subject'}, not for ${names(subjects)}`, form);
    return { ok: true, source, form, keyId: key.id, digest: hit.digest };
  }
  if (isObject(bundle.messageSignature)) {
    const ms = bundle.messageSignature;
    const form = 'message-signature';
    const sig = base64(ms.signature);
    const md = isObject(ms.messageDigest) ? ms.messageDigest : null;
    const digest = md ? base64(md.digest) : null;
    if (!sig || !md || !digest) return bad('malformed message signature (messageDigest, signature)', form);
    if (md.algorithm !== 'SHA2_256' || digest.length !== 32) return bad(`unsupported message digest algorithm ${JSON.stringify(md.algorithm ?? null)} (only SHA2_256)`, form);
    const signedDigest = `sha256:${digest.toString('hex')}`;
    const hit = subjects.find((s) => s.digest === signedDigest);
    if (!hit) {
      // Which key signed it is still worth saying: it tells a wrong image from an unknown signer.
      return bad(`the message signature is for ${signedDigest}, not for ${names(subjects)}`, form);
    }
    if (sha256Of(hit.bytes) !== hit.digest) return bad(`the bytes of ${hit.digest} do not hash to it`, form);
    const key = signer(keys, hit.bytes, sig);
    if (!key) return bad(noKey(keys), form);
    return { ok: true, source, form, keyId: key.id, digest: hit.digest };
  }
  return bad('the bundle holds neither a DSSE envelope nor a message signature');
}

export function verifySimpleSigning(payload: Buffer, signature: string, source: string, subjects: readonly SignedSubject[], keys: readonly TrustedKey[]): Verdict {
  const form = 'simple-signing';
  const bad = (reason: string): Verdict => ({ ok: false, source, form, reason });
  const sig = base64(signature);
  if (!sig || sig.length === 0) return bad(`no base64 signature in ${COSIGN_SIGNATURE_ANNOTATION}`);
  const key = signer(keys, payload, sig);
  if (!key) return bad(noKey(keys));
  let doc: unknown;
  try {
    doc = JSON.parse(payload.toString('utf8'));
  } catch {
    return bad(`signed by ${key.id}, but the simple-signing payload is not JSON`);
  }
  const critical = isObject(doc) && isObject(doc.critical) ? doc.critical : null;
  if (!critical || typeof critical.type !== 'string' || !SIMPLE_SIGNING_TYPES.has(critical.type) || !isObject(critical.image)) {
    return bad(`signed by ${key.id}, but the payload is not a simple-signing container image signature`);
  }
  // Keys are matched without regard to case, as cosign's own (Go) decoder does.
  const entry = Object.entries(critical.image).find(([k]) => k.toLowerCase() === 'docker-manifest-digest');
  const named = typeof entry?.[1] === 'string' ? entry[1] : null;
  const hit = subjects.find((s) => s.digest === named);
  if (!hit) return bad(`signed by ${key.id} for ${named ?? 'no docker-manifest-digest'}, not for ${names(subjects)}`);
  return { ok: true, source, form, keyId: key.id, digest: hit.digest };
}
