/**
 * Signature fixtures made by an independent implementation: sigstore-js's `@sigstore/sign` with a
 * key-based signer (node:crypto, no Fulcio, no Rekor: `witnesses: []`) builds the DSSE and
 * message-signature bundles, serialised by `@sigstore/bundle`'s bundleToJSON. cosign's classic
 * `.sig` manifests are built by hand to cosign's SIGNATURE_SPEC (simple-signing payload as a
 * layer, the base64 signature in `dev.cosignproject.cosign/signature`), and referrer manifests to
 * its BUNDLE_SPEC (artifactType the bundle media type, empty config, the bundle as the layer,
 * `subject` the image manifest).
 */
import { generateKeyPairSync, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bundleToJSON } from '@sigstore/bundle';
import { DSSEBundleBuilder, MessageSignatureBundleBuilder, type Signer } from '@sigstore/sign';
import { json, sha256 } from '../../scripts/images/oci.mjs';

export const BUNDLE_MT = 'application/vnd.dev.sigstore.bundle.v0.3+json';
export const SIMPLE_SIGNING_MT = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const EMPTY_MT = 'application/vnd.oci.empty.v1+json';
export const EMPTY_BLOB = Buffer.from('{}');

export interface TestKey {
  id: string;
  algorithm: 'ecdsa-p256' | 'ed25519';
  privateKey: KeyObject;
  publicPem: string;
  /** Where writePem put the public key. */
  path?: string;
}

export function makeKey(id: string, algorithm: TestKey['algorithm']): TestKey {
  const { privateKey, publicKey } = algorithm === 'ed25519' ? generateKeyPairSync('ed25519') : generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return { id, algorithm, privateKey, publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}

/** Writes the public key as a PEM file in `dir`; returns the key with its path. */
export function writePem(dir: string, k: TestKey): TestKey & { path: string } {
  const path = join(dir, `${k.id}.pub`);
  writeFileSync(path, k.publicPem);
  return { ...k, path };
}

/** Raw signature as cosign makes them: ECDSA P-256 over SHA-256 (DER), Ed25519 over the message. */
export function rawSign(k: TestKey, data: Buffer): Buffer {
  return k.algorithm === 'ed25519' ? cryptoSign(null, data, k.privateKey) : cryptoSign('sha256', data, k.privateKey);
}

/** A @sigstore/sign Signer over a local key. */
function signerOf(k: TestKey): Signer {
  return { sign: async (data: Buffer) => ({ signature: rawSign(k, data), key: { $case: 'publicKey', publicKey: k.publicPem, hint: k.id } }) };
}

/** The in-toto statement cosign's bundle signing writes for an image. */
export function statementFor(digest: string, name = 'image'): Buffer {
  return json({
    _type: 'https://in-toto.io/Statement/v1',
    subject: [{ name, digest: { sha256: digest.replace(/^sha256:/, '') } }],
    predicateType: 'https://sigstore.dev/cosign/sign/v1',
    predicate: {},
  });
}

/** A v0.3 bundle with a DSSE envelope over an in-toto statement naming `digest`. */
export async function dsseBundle(k: TestKey, digest: string, statement = statementFor(digest)): Promise<Record<string, unknown>> {
  const b = await new DSSEBundleBuilder({ signer: signerOf(k), witnesses: [] }).create({ data: statement, type: 'application/vnd.in-toto+json' });
  return bundleToJSON(b) as unknown as Record<string, unknown>;
}

/** A v0.3 bundle with a message signature over `message` (the manifest bytes). */
export async function messageBundle(k: TestKey, message: Buffer): Promise<Record<string, unknown>> {
  const b = await new MessageSignatureBundleBuilder({ signer: signerOf(k), witnesses: [] }).create({ data: message });
  return bundleToJSON(b) as unknown as Record<string, unknown>;
}

/** cosign's simple-signing payload for an image. */
export function simpleSigningPayload(digest: string, reference = 'example.test/app'): Buffer {
  return json({ critical: { identity: { 'docker-reference': reference }, image: { 'docker-manifest-digest': digest }, type: 'cosign container image signature' }, optional: null });
}

export interface Blob {
  digest: string;
  data: Buffer;
}

/** A manifest and the blobs it needs (config and layers), as files of an OCI layout or things to push. */
export interface ArtifactManifest {
  manifest: Buffer;
  digest: string;
  blobs: Blob[];
}

/** A referrer manifest (cosign's bundle spec) carrying `bundle`, whose subject is the image manifest. */
export function referrerManifest(bundle: unknown, subject: { digest: string; size: number; mediaType?: string }): ArtifactManifest {
  const data = json(bundle);
  const manifest = json({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    artifactType: BUNDLE_MT,
    config: { mediaType: EMPTY_MT, digest: sha256(EMPTY_BLOB), size: EMPTY_BLOB.length },
    layers: [{ mediaType: BUNDLE_MT, digest: sha256(data), size: data.length }],
    subject: { mediaType: subject.mediaType ?? 'application/vnd.oci.image.manifest.v1+json', digest: subject.digest, size: subject.size },
    annotations: { 'dev.sigstore.bundle.content': 'dsse-envelope', 'dev.sigstore.bundle.predicateType': 'https://sigstore.dev/cosign/sign/v1' },
  });
  return { manifest, digest: sha256(manifest), blobs: [{ digest: sha256(EMPTY_BLOB), data: EMPTY_BLOB }, { digest: sha256(data), data }] };
}

/** cosign's classic `.sig` manifest: one simple-signing layer with its signature annotation. */
export function simpleSigningManifest(k: TestKey, digest: string, o: { payload?: Buffer; signature?: string } = {}): ArtifactManifest {
  const payload = o.payload ?? simpleSigningPayload(digest);
  const config = json({ architecture: '', config: {}, created: '0001-01-01T00:00:00Z', history: [{ created: '0001-01-01T00:00:00Z' }], os: '', rootfs: { type: 'layers', diff_ids: [sha256(payload)] } });
  const manifest = json({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
    layers: [{ mediaType: SIMPLE_SIGNING_MT, digest: sha256(payload), size: payload.length, annotations: { 'dev.cosignproject.cosign/signature': o.signature ?? rawSign(k, payload).toString('base64') } }],
  });
  return { manifest, digest: sha256(manifest), blobs: [{ digest: sha256(config), data: config }, { digest: sha256(payload), data: payload }] };
}

/** The referrers-tag index (`sha256-<hex>`) listing referrer manifests, for registries without the referrers API. */
export function referrersIndex(referrers: ArtifactManifest[]): Buffer {
  return json({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: referrers.map((r) => ({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: r.digest, size: r.manifest.length, artifactType: BUNDLE_MT })),
  });
}

/**
 * Adds artifacts to an OCI layout's files: their blobs, and (when `list`) a descriptor in
 * index.json — with `artifactType` for a referrer, or the ref name for a `.sig` tag.
 */
export function addToLayout(files: { path: string; data: Buffer }[], items: { artifact: ArtifactManifest; list?: { refName?: string; artifactType?: string } }[]): { path: string; data: Buffer }[] {
  const out = files.map((f) => ({ ...f }));
  const have = new Set(out.map((f) => f.path));
  const add = (b: Blob) => {
    const path = `blobs/sha256/${b.digest.slice(7)}`;
    if (!have.has(path)) out.push({ path, data: b.data }), have.add(path);
  };
  const indexFile = out.find((f) => f.path === 'index.json')!;
  const index = JSON.parse(indexFile.data.toString()) as { manifests: object[] };
  for (const { artifact, list } of items) {
    artifact.blobs.forEach(add);
    add({ digest: artifact.digest, data: artifact.manifest });
    if (list) {
      index.manifests.push({
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        digest: artifact.digest,
        size: artifact.manifest.length,
        ...(list.artifactType ? { artifactType: list.artifactType } : {}),
        ...(list.refName ? { annotations: { 'org.opencontainers.image.ref.name': list.refName } } : {}),
      });
    }
  }
  indexFile.data = json(index);
  return out;
}

/** What pushes need of a registry: where it listens (its network door) and its `HOST:PORT`. */
export interface PushTarget {
  host: string;
  door: { connect(host: string, port: number): Promise<import('node:net').Socket> };
}

/** One plain-HTTP request to the registry through its door (anonymous registries only). */
async function registryRequest(reg: PushTarget, method: string, path: string, body: Buffer | null, headers: Record<string, string> = {}): Promise<{ status: number; headers: import('node:http').IncomingHttpHeaders; body: string }> {
  const http = await import('node:http');
  const port = Number(reg.host.split(':')[1]);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        method,
        host: '127.0.0.1',
        port,
        path,
        headers: { ...headers, ...(body ? { 'content-length': String(body.length) } : {}) },
        createConnection: ((_o: unknown, cb: (err: Error | null, s?: import('node:net').Socket) => void) => {
          reg.door.connect('127.0.0.1', port).then((s) => cb(null, s), (e: Error) => cb(e));
          return undefined;
        }) as never,
      },
      (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
        res.on('error', reject);
      },
    );
    req.setTimeout(15_000, () => req.destroy(new Error(`${method} ${path}: no answer within 15 s`)));
    req.on('error', reject);
    req.end(body ?? undefined);
  });
}

/** Uploads a blob (POST, then a monolithic PUT with its digest), unless the registry has it. */
export async function putBlob(reg: PushTarget, repo: string, blob: Blob): Promise<void> {
  const head = await registryRequest(reg, 'HEAD', `/v2/${repo}/blobs/${blob.digest}`, null);
  if (head.status === 200) return;
  const start = await registryRequest(reg, 'POST', `/v2/${repo}/blobs/uploads/`, Buffer.alloc(0));
  if (start.status !== 202 || !start.headers.location) throw new Error(`POST blob upload: HTTP ${start.status} ${start.body}`);
  const loc = new URL(start.headers.location, `http://${reg.host}`);
  loc.searchParams.set('digest', blob.digest);
  const put = await registryRequest(reg, 'PUT', `${loc.pathname}${loc.search}`, blob.data, { 'content-type': 'application/octet-stream' });
  if (put.status !== 201) throw new Error(`PUT blob ${blob.digest}: HTTP ${put.status} ${put.body}`);
}

/** PUTs a manifest (or index) under a tag or its digest. */
export async function putManifest(reg: PushTarget, repo: string, reference: string, bytes: Buffer, mediaType: string): Promise<void> {
  const r = await registryRequest(reg, 'PUT', `/v2/${repo}/manifests/${reference}`, bytes, { 'content-type': mediaType });
  if (r.status !== 201) throw new Error(`PUT manifest ${repo}:${reference}: HTTP ${r.status} ${r.body}`);
}

/** Pushes an artifact manifest with its blobs, by digest (and under `tag` when given). */
export async function pushArtifact(reg: PushTarget, repo: string, a: ArtifactManifest, tag?: string): Promise<void> {
  for (const b of a.blobs) await putBlob(reg, repo, b);
  await putManifest(reg, repo, tag ?? a.digest, a.manifest, 'application/vnd.oci.image.manifest.v1+json');
}

/** GET of a registry path: its status (e.g. to see whether the referrers API exists). */
export async function registryStatus(reg: PushTarget, path: string): Promise<number> {
  return (await registryRequest(reg, 'GET', path, null, { accept: 'application/vnd.oci.image.index.v1+json' })).status;
}

/** The raw manifest of repo:reference as the registry serves it (bytes and digest). */
export async function getManifest(reg: PushTarget, repo: string, reference: string): Promise<Buffer> {
  const r = await registryRequest(reg, 'GET', `/v2/${repo}/manifests/${reference}`, null, { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json' });
  if (r.status !== 200) throw new Error(`GET manifest ${repo}:${reference}: HTTP ${r.status}`);
  return Buffer.from(r.body, 'utf8');
}
