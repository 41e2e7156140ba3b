/**
 * Where images come from (SPEC section 11): a path on the device, an https URL of an archive, or
 * an image in an OCI registry. Every source goes through the same three steps, so that an action
 * that needs several images (a desired state) can check them all before it changes anything:
 *
 *  1. `resolve`: the image's documents (manifest, config; small) and what its layers would cost;
 *  2. `ensureSpace`: the whole action's need against the free space of dataDir, before any blob;
 *  3. `fetch`: every blob local and verified (downloads resume; a local archive has nothing to do).
 *
 * `release` drops what `fetch` downloaded once the layers are in the store.
 *
 * Downloads live in `<dataDir>/downloads/sha256/<hex>` (`.partial` while incomplete): a failed
 * or interrupted install leaves them, so the next attempt resumes instead of starting again.
 *
 * A URL is an archive whose manifests are inside it: its `resolve` checks the space for the
 * archive itself (its `size`, when given), downloads it and reads it; the unpacked need is then
 * checked by `ensureSpace` before any layer is unpacked.
 *
 * Signatures (SPEC 13) are checked inside `resolve`, against the policy of images.trust, before
 * `fetch` and before anything is unpacked: an image refused with UNTRUSTED leaves nothing behind
 * (a URL's downloaded archive is dropped). Those given beside the image (`signature`) and those
 * inside an archive are tried first; a registry is asked (referrers API, else the referrers tag,
 * and cosign's `sha256-<hex>.sig`) only when none of them is valid.
 */
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { open, readdir, rm, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { SmError } from '../errors.js';
import type { Logger } from '../log.js';
import { backoffDelay, bytesOnDisk, downloadBlob, RateLimiter, type DownloadPolicy } from './net/download.js';
import { discard, Http, readCapped, TransientError, type RegistryConfig } from './net/http.js';
import { parseReference, RegistryClient } from './net/registry.js';
import { hostArchitecture, sha256Hex } from './paths.js';
import { chooseManifest, ConfigSchema, imageInfoFrom, IndexSchema, ManifestSchema, parseJson } from './documents.js';
import { candidateOf, MAX_SIGNATURE_BYTES, referrerDescriptors, referrersTag, signatureBlobs, signatureTag, subjectOf } from '../trust/discover.js';
import { Trust } from '../trust/policy.js';
import type { SignatureCandidate, SignedSubject } from '../trust/verify.js';
import { INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES, MAX_JSON_BLOB_BYTES, type ImageInfo, type ImageLimits } from './types.js';

export interface ImageRef {
  /** Absolute path, `https://` URL or `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`. */
  image: string;
  /** `sha256:<hex>` of the archive file (URL sources: required). */
  digest?: string | undefined;
  /** Size of the archive file in bytes (URL sources: optional). */
  size?: number | undefined;
  /**
   * A sigstore bundle given beside the image (SPEC 13): the bundle's JSON object, or the absolute
   * path of a file on the device holding it.
   */
  signature?: Record<string, unknown> | string | undefined;
}

type Origin = { kind: 'local' } | { kind: 'url'; archive: string } | { kind: 'registry'; client: RegistryClient };

export interface ResolvedImage {
  ref: ImageRef;
  info: ImageInfo;
  /** What fetching and unpacking the layers not yet stored will take, as far as the documents tell. */
  need: { downloadBytes: number; unpackedBytes: number };
  /** How `fetch` gets the blobs. */
  readonly origin: Origin;
  /** Id of the trusted key whose signature was verified; null when unsigned and the policy allows it, or the policy is off. */
  signedBy: string | null;
}

/** What a source's resolution gives the signature check. */
interface Resolution {
  resolved: ResolvedImage;
  /** The manifest (and the index that chose it), which a signature must name. */
  subjects: SignedSubject[];
  /** Signatures found with the image's documents (in an archive). */
  found: SignatureCandidate[];
  searched: string[];
  /** Asks the source for more signatures (a registry), only when none found so far is valid. */
  discover?: () => Promise<{ candidates: SignatureCandidate[]; searched: string[] }>;
}

export interface FetchOptions {
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
  signal?: AbortSignal;
}

export interface DownloadSettings {
  stallTimeoutMs: number;
  maxDownloadBytesPerSec?: number | undefined;
  parallelFetches: number;
  retries: number;
}

export interface ImageSourcesDeps {
  dataDir: string;
  limits: ImageLimits;
  /** Bytes of dataDir that installs must leave free. */
  reserveBytes: number;
  /** Whether a layer is already in the store (its blob need not be fetched or unpacked again). */
  hasLayer: (digest: string) => boolean;
  logger: Logger;
  downloads?: Partial<DownloadSettings>;
  registries?: Record<string, RegistryConfig>;
  /** Backoff between attempts (tests shorten it). */
  backoff?: { initialMs: number; maxMs: number };
  /** The signature policy (images.trust); default off. */
  trust?: Trust;
}

const DOWNLOAD_DEFAULTS: DownloadSettings = { stallTimeoutMs: 30_000, parallelFetches: 3, retries: 8 };
/** Downloads nobody finished for this long are dropped at start-up. */
const STALE_DOWNLOAD_MS = 7 * 24 * 3600 * 1000;

export class ImageSources {
  readonly downloadDir: string;
  private readonly http: Http;
  private readonly settings: DownloadSettings;
  private readonly policy: DownloadPolicy;
  /** Download files in use by actions in flight, by how many (a release keeps them for the others). */
  private readonly inUse = new Map<string, number>();
  /** The download files each resolved image holds until its release. */
  private readonly held = new WeakMap<ImageInfo, string[]>();
  /** Registry authorizations (tokens) by repository, reused until refused. */
  private readonly auth = new Map<string, string>();

  constructor(private readonly deps: ImageSourcesDeps) {
    this.downloadDir = join(deps.dataDir, 'downloads', 'sha256');
    this.settings = { ...DOWNLOAD_DEFAULTS, ...(deps.downloads ?? {}) };
    this.http = new Http({ hosts: deps.registries ?? {}, stallTimeoutMs: this.settings.stallTimeoutMs });
    this.policy = {
      retries: this.settings.retries,
      backoff: deps.backoff ?? { initialMs: 500, maxMs: 30_000 },
      maxBytes: deps.limits.maxArchiveBytes,
      rate: this.settings.maxDownloadBytesPerSec ? new RateLimiter(this.settings.maxDownloadBytesPerSec) : null,
    };
  }

  /** Start-up: drops downloads whose layers are stored, and those nobody touched for a week. */
  async reconcile(): Promise<void> {
    mkdirSync(this.downloadDir, { recursive: true });
    const now = Date.now();
    for (const name of await readdir(this.downloadDir)) {
      const path = join(this.downloadDir, name);
      const hex = name.replace(/\.partial$/, '');
      const st = await stat(path);
      if (this.deps.hasLayer(`sha256:${hex}`) || now - st.mtimeMs > STALE_DOWNLOAD_MS) await rm(path, { force: true });
    }
  }

  async close(): Promise<void> {
    await this.http.close();
  }

  /** The signature policy in force. */
  get trust(): Trust {
    return this.deps.trust ?? Trust.off();
  }

  /** The image's documents and their cost; UNTRUSTED (leaving nothing behind) when the trust policy refuses it. */
  async resolve(ref: ImageRef, opts: FetchOptions = {}): Promise<ResolvedImage> {
    const r = await this.resolveSource(ref, opts);
    try {
      r.resolved.signedBy = await this.checkSignatures(ref, r);
    } catch (err) {
      await this.release(r.resolved.info);
      throw err;
    }
    return r.resolved;
  }

  private resolveSource(ref: ImageRef, opts: FetchOptions): Promise<Resolution> {
    if (ref.image.startsWith('/')) return this.resolveLocal(ref, ref.image, { kind: 'local' });
    if (ref.image.startsWith('docker://')) return this.resolveRegistry(ref);
    if (/^https?:\/\//.test(ref.image)) return this.resolveUrl(ref, opts);
    throw new SmError('INVALID_IMAGE', `unsupported image source ${JSON.stringify(ref.image)}: expected an absolute path, an https:// URL or docker://HOST/REPO[:TAG|@DIGEST]`, { image: ref.image });
  }

  /** The policy's verdict on the image: the signer's key id, null (unsigned, allowed), or UNTRUSTED. */
  private async checkSignatures(ref: ImageRef, r: Resolution): Promise<string | null> {
    const trust = this.trust;
    if (!trust.active) return null;
    const given = ref.signature === undefined ? [] : [await givenSignature(ref.signature)];
    const verdicts = trust.verify([...given, ...r.found], r.subjects);
    const searched = [...(ref.signature === undefined ? [] : ['the request\'s signature']), ...r.searched];
    if (!verdicts.some((v) => v.ok) && r.discover) {
      const more = await r.discover();
      verdicts.push(...trust.verify(more.candidates, r.subjects));
      searched.push(...more.searched);
    }
    const signedBy = trust.decide(ref.image, r.subjects, verdicts, searched);
    const good = verdicts.find((v) => v.ok);
    if (good?.ok) this.deps.logger.info('image signature verified', { image: ref.image, digest: good.digest, keyId: good.keyId, form: good.form, source: good.source });
    else this.deps.logger.warn('image installs unsigned (images.trust.policy verify-if-present)', { image: ref.image, digest: r.subjects[0]?.digest });
    return signedBy;
  }

  /** LIMIT when the action's images do not fit in dataDir's free space less the reserve. */
  async ensureSpace(images: readonly ResolvedImage[], extraBytes = 0): Promise<void> {
    // A layer shared by two images of one action is fetched and unpacked once.
    const seen = new Set<string>();
    let need = extraBytes;
    for (const r of images) {
      for (const l of r.info.layers) {
        if (seen.has(l.digest) || this.deps.hasLayer(l.digest)) continue;
        seen.add(l.digest);
        // Unpacked is at least the blob's size (a tar is bigger than its files; gzip only shrinks).
        need += l.size;
      }
      need += r.need.downloadBytes;
    }
    if (need === 0) return;
    mkdirSync(this.downloadDir, { recursive: true });
    const st = await statfs(this.deps.dataDir);
    const free = Number(st.bavail) * Number(st.bsize);
    if (need > free - this.deps.reserveBytes) {
      throw new SmError('LIMIT', `not enough disk space: the images need ${need} bytes, ${this.deps.dataDir} has ${free} free of which ${this.deps.reserveBytes} are reserved (images.reserveBytes)`, {
        neededBytes: need,
        freeBytes: free,
        reserveBytes: this.deps.reserveBytes,
      });
    }
  }

  /** Makes every blob of the image local and verified; returns the image to unpack from. */
  async fetch(r: ResolvedImage, opts: FetchOptions = {}): Promise<ImageInfo> {
    if (r.origin.kind !== 'registry') return r.info;
    const client = r.origin.client;
    const missing = r.info.layers.filter((l) => !this.deps.hasLayer(l.digest));
    const total = missing.reduce((n, l) => n + l.size, 0);
    let done = 0;
    const onBytes = (n: number) => {
      done += n;
      opts.onProgress?.(done, total);
    };
    // One failure stops the other workers (they see the abort at their next chunk or attempt).
    const ac = new AbortController();
    const stop = () => ac.abort(opts.signal?.reason);
    opts.signal?.addEventListener('abort', stop, { once: true });
    const queue = [...missing];
    let firstError: unknown = null;
    const worker = async () => {
      try {
        for (let l = queue.shift(); l; l = queue.shift()) {
          const { digest, size } = l;
          const req = { digest, size, path: this.blobPath(digest), what: `layer ${digest} of ${client.name}`, get: (range: number, s: AbortSignal) => client.blob(digest, range, s) };
          await downloadBlob(req, this.policy, onBytes, ac.signal);
        }
      } catch (err) {
        firstError ??= err;
        ac.abort(err);
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(this.settings.parallelFetches, Math.max(1, missing.length)) }, worker));
    } finally {
      opts.signal?.removeEventListener('abort', stop);
    }
    if (firstError) throw firstError;
    opts.onProgress?.(total, total);
    return r.info;
  }

  /**
   * Drops what was downloaded for this image once no other action in flight uses it: an
   * archive, and the layer blobs now in the store. A blob whose layer is not stored (the
   * install failed) stays, so that the next attempt need not fetch it again.
   */
  async release(info: ImageInfo): Promise<void> {
    const files = this.held.get(info) ?? [];
    this.held.delete(info);
    const archive = info.blobs.kind === 'archive' ? info.blobs.path : null;
    const stored = new Set(info.layers.filter((l) => this.deps.hasLayer(l.digest)).map((l) => this.blobPath(l.digest)));
    for (const f of files) {
      const n = (this.inUse.get(f) ?? 1) - 1;
      if (n > 0) this.inUse.set(f, n);
      else this.inUse.delete(f);
      if (n <= 0 && (f === archive || stored.has(f))) await rm(f, { force: true });
    }
  }

  private blobPath(digest: string): string {
    const hex = sha256Hex(digest);
    if (!hex) throw new SmError('INVALID_IMAGE', `not a sha256 digest: ${digest}`, { digest });
    return join(this.downloadDir, hex);
  }

  private hold(info: ImageInfo, paths: string[]): void {
    for (const p of paths) this.inUse.set(p, (this.inUse.get(p) ?? 0) + 1);
    this.held.set(info, paths);
  }

  private async resolveLocal(ref: ImageRef, path: string, origin: Origin): Promise<Resolution> {
    const { readImageDocuments } = await import('./reader.js');
    const docs = await readImageDocuments(path, { limits: this.deps.limits });
    const info = docs.info;
    return {
      resolved: { ref, info, need: { downloadBytes: 0, unpackedBytes: this.unpackedNeed(info) }, origin, signedBy: null },
      subjects: docs.subjects,
      found: docs.signatures,
      searched: info.format === 'oci' ? [`OCI referrers and ${signatureTag(info.manifestDigest)} in the archive`] : [],
    };
  }

  private async resolveUrl(ref: ImageRef, opts: FetchOptions): Promise<Resolution> {
    const url = new URL(ref.image);
    this.http.checkScheme(url);
    if (!ref.digest || !sha256Hex(ref.digest)) throw new SmError('INVALID_IMAGE', `a URL source needs "digest": "sha256:<hex>" of the archive`, { image: ref.image });
    const path = this.blobPath(ref.digest);
    const have = await bytesOnDisk(path);
    if (!have.complete && ref.size !== undefined) await this.ensureSpace([], Math.max(0, ref.size - have.bytes));
    let done = 0;
    await downloadBlob(
      { digest: ref.digest, size: ref.size ?? null, path, what: `archive ${url.host}${url.pathname}`, get: (range, signal) => this.http.request(url, { headers: range > 0 ? { range: `bytes=${range}-` } : {}, signal, bulk: true }) },
      this.policy,
      (n) => {
        done += n;
        opts.onProgress?.(done, ref.size ?? done);
      },
      opts.signal ?? new AbortController().signal,
    );
    const resolved = await this.resolveLocal(ref, path, { kind: 'url', archive: path });
    this.hold(resolved.resolved.info, [path]);
    return resolved;
  }

  private async resolveRegistry(ref: ImageRef): Promise<Resolution> {
    const target = parseReference(ref.image);
    const client = new RegistryClient(this.http, target, this.auth);
    const platform = { os: 'linux', architecture: hostArchitecture() };
    const top = await this.retrying(() => client.manifest(target.reference, MAX_JSON_BLOB_BYTES));
    const topType = mediaTypeOf(top.bytes, top.mediaType);
    let manifestDesc = { mediaType: topType, digest: top.digest, size: top.bytes.length } as Parameters<typeof imageInfoFrom>[0]['manifestDesc'];
    let manifestBytes = top.bytes;
    let outerAnnotations: Record<string, string> = {};
    const subjects: SignedSubject[] = [];
    if (INDEX_MEDIA_TYPES.has(topType)) {
      const index = parseJson(top.bytes, IndexSchema, `image index ${top.digest}`);
      const chosen = chooseManifest(index.manifests, undefined, platform);
      if (!chosen) throw new SmError('INVALID_IMAGE', `image index ${top.digest} of ${client.name} names no manifest`, { image: ref.image });
      if (!MANIFEST_MEDIA_TYPES.has(chosen.mediaType)) throw new SmError('INVALID_IMAGE', `unsupported manifest media type "${chosen.mediaType}" in the index of ${client.name}`, { image: ref.image });
      const m = await this.retrying(() => client.manifest(chosen.digest, MAX_JSON_BLOB_BYTES));
      if (m.bytes.length !== chosen.size) throw new SmError('INVALID_IMAGE', `manifest ${chosen.digest} is ${m.bytes.length} bytes, the index says ${chosen.size}`, { digest: chosen.digest });
      manifestDesc = chosen;
      manifestBytes = m.bytes;
      subjects.push({ digest: top.digest, bytes: top.bytes });
      outerAnnotations = { ...(chosen.annotations ?? {}) };
    }
    if (ref.digest !== undefined && target.digest === null && manifestDesc.digest !== ref.digest && top.digest !== ref.digest) {
      throw new SmError('INVALID_IMAGE', `${ref.image} is ${top.digest}, not the digest ${ref.digest} asked for`, { image: ref.image, digest: ref.digest, actual: top.digest });
    }
    const manifest = parseJson(manifestBytes, ManifestSchema, `manifest ${manifestDesc.digest}`);
    const config = parseJson(await this.retrying(() => this.smallBlob(client, manifest.config.digest, manifest.config.size, 'image config')), ConfigSchema, `image config ${manifest.config.digest}`);
    const info = imageInfoFrom({ manifestDesc, manifest, config, outerAnnotations, blobs: { kind: 'dir', root: this.downloadDir }, source: ref.image, format: 'registry' });
    let downloadBytes = 0;
    const files: string[] = [];
    for (const l of info.layers) {
      if (this.deps.hasLayer(l.digest)) continue;
      const have = await bytesOnDisk(this.blobPath(l.digest));
      downloadBytes += have.complete ? 0 : Math.max(0, l.size - have.bytes);
      files.push(this.blobPath(l.digest));
    }
    this.hold(info, files);
    // The manifest first: it is what a signature must name (the index above it names it too).
    subjects.unshift({ digest: manifestDesc.digest, bytes: manifestBytes });
    return {
      resolved: { ref, info, need: { downloadBytes, unpackedBytes: this.unpackedNeed(info) }, origin: { kind: 'registry', client }, signedBy: null },
      subjects,
      found: [],
      searched: [],
      discover: () => this.registrySignatures(client, subjects),
    };
  }

  /**
   * Signatures of the subjects in the registry: OCI 1.1 referrers (the referrers API, else the
   * referrers tag `sha256-<hex>`) and cosign's classic tag `sha256-<hex>.sig`. A listed referrer
   * that is gone, or is not JSON, is skipped; a failing registry is an error like any other.
   */
  private async registrySignatures(client: RegistryClient, subjects: readonly SignedSubject[]): Promise<{ candidates: SignatureCandidate[]; searched: string[] }> {
    const candidates: SignatureCandidate[] = [];
    const searched: string[] = [];
    const parse = (b: Buffer): unknown => {
      try {
        return JSON.parse(b.toString('utf8'));
      } catch {
        return null;
      }
    };
    const fromManifest = async (doc: unknown, subject: string, source: string) => {
      const named = subjectOf(doc);
      if (named !== null && named !== subject) return;
      for (const b of signatureBlobs(doc)) {
        try {
          candidates.push(candidateOf(b, await this.retrying(() => this.smallBlob(client, b.digest, b.size, 'signature')), source));
        } catch (err) {
          if (!(err instanceof SmError && err.code === 'NOT_FOUND')) throw err;
        }
      }
    };
    for (const s of subjects) {
      let index = await this.retrying(() => client.referrers(s.digest, MAX_JSON_BLOB_BYTES));
      if (index !== null) searched.push(`the referrers API of ${client.name} for ${s.digest}`);
      else {
        const tag = referrersTag(s.digest);
        index = (await this.retrying(() => client.manifestIfPresent(tag, MAX_JSON_BLOB_BYTES)))?.bytes ?? null;
        searched.push(`the referrers tag ${tag} in ${client.name}`);
      }
      for (const d of index ? referrerDescriptors(parse(index)) : []) {
        const m = await this.retrying(() => client.manifestIfPresent(d.digest, MAX_SIGNATURE_BYTES));
        if (m) await fromManifest(parse(m.bytes), s.digest, `referrer ${d.digest} in ${client.name}`);
      }
      const tag = signatureTag(s.digest);
      searched.push(`the tag ${tag} in ${client.name}`);
      const sig = await this.retrying(() => client.manifestIfPresent(tag, MAX_SIGNATURE_BYTES));
      if (sig) await fromManifest(parse(sig.bytes), s.digest, `${tag} in ${client.name}`);
    }
    return { candidates, searched };
  }

  /** A small JSON blob (the config), verified by digest and size. */
  private async smallBlob(client: RegistryClient, digest: string, size: number, what: string): Promise<Buffer> {
    if (size > MAX_JSON_BLOB_BYTES) throw new SmError('INVALID_IMAGE', `${what} ${digest} is ${size} bytes, over the ${MAX_JSON_BLOB_BYTES}-byte cap for JSON documents`, { digest });
    const r = await client.blob(digest, 0);
    if (r.status !== 200) {
      await discard(r.body);
      throw client.statusError(r.status, `${what} ${digest}`);
    }
    const bytes = await readCapped(r.body, MAX_JSON_BLOB_BYTES, `${what} ${digest}`);
    const actual = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (actual !== digest || bytes.length !== size) throw new SmError('INVALID_IMAGE', `${what} ${digest}: received ${bytes.length} bytes hashing to ${actual}`, { digest, actual });
    return bytes;
  }

  /** Retries a small request on link failures with the downloads' backoff. */
  private async retrying<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!(err instanceof TransientError) || attempt > this.policy.retries) {
          if (err instanceof TransientError) throw new SmError('UNAVAILABLE', `gave up after ${attempt} attempts: ${err.message}`, {}, { cause: err });
          throw err;
        }
        await new Promise((r) => setTimeout(r, backoffDelay(attempt, this.policy.backoff)));
      }
    }
  }

  private unpackedNeed(info: ImageInfo): number {
    return info.layers.filter((l) => !this.deps.hasLayer(l.digest)).reduce((n, l) => n + l.size, 0);
  }
}

/** The media type of a manifest: its own `mediaType` field, else the Content-Type. */
function mediaTypeOf(bytes: Buffer, contentType: string): string {
  try {
    const v = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown; manifests?: unknown };
    if (typeof v.mediaType === 'string') return v.mediaType;
    // An OCI document may omit mediaType: an index has `manifests`.
    if (Array.isArray(v.manifests)) return 'application/vnd.oci.image.index.v1+json';
  } catch {
    /* not JSON: parseJson reports it below with the document's name */
  }
  return contentType || 'application/vnd.oci.image.manifest.v1+json';
}

/** A signature given beside the image: the bundle object, or the file holding it (capped). */
async function givenSignature(sig: Record<string, unknown> | string): Promise<SignatureCandidate> {
  if (typeof sig !== 'string') return { kind: 'bundle', source: 'the request\'s signature', bundle: sig };
  if (!sig.startsWith('/')) throw new SmError('INVALID_IMAGE', `"signature" must be a sigstore bundle or the absolute path of a file holding one, not ${JSON.stringify(sig)}`, { signature: sig });
  let text: Buffer;
  try {
    const fh = await open(sig, 'r');
    try {
      const buf = Buffer.alloc(MAX_SIGNATURE_BYTES + 1);
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      if (bytesRead > MAX_SIGNATURE_BYTES) throw new SmError('INVALID_IMAGE', `signature file ${sig} is over ${MAX_SIGNATURE_BYTES} bytes`, { signature: sig });
      text = buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch (err) {
    if (err instanceof SmError) throw err;
    throw new SmError('INVALID_IMAGE', `cannot read the signature file ${sig}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { signature: sig });
  }
  let bundle: unknown = null;
  try {
    bundle = JSON.parse(text.toString('utf8'));
  } catch {
    /* verifyBundle says it is not a bundle */
  }
  return { kind: 'bundle', source: `the signature file ${sig}`, bundle };
}
