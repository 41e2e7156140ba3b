/**
 * readImage: the first streaming pass over an image archive — an OCI image layout, or a Docker
 * archive (`docker save`, `podman save`: manifest.json, config, layer tars), told apart by their
 * top-level files in the same pass. It collects the sizes of all files and the (small, capped)
 * JSON documents, then picks and verifies index → manifest → config (OCI) or manifest.json entry
 * → config (Docker). Layer blobs are only checked for presence and size here; their digests are
 * verified while they are extracted (extract.ts). The documents' schemas and the ImageInfo built
 * from them are in documents.ts, shared with the registry client.
 */
import { createHash } from 'node:crypto';
import * as z from 'zod';
import { checkArchiveFile, GZIP_MAGIC, isGzipFile, walkArchive } from './archive.js';
import { checkManifest, chooseManifest, ConfigSchema, imageInfoFrom, IndexSchema, invalid, ManifestSchema, parseJson, REF_NAME, type Descriptor, type Index, type Manifest } from './documents.js';
import { checkSymlinkTarget, hostArchitecture, normalizeEntryPath, sha256Hex } from './paths.js';
import {
  INDEX_MEDIA_TYPES,
  MANIFEST_MEDIA_TYPES,
  MAX_JSON_BLOB_BYTES,
  MEDIA_TYPES,
  resolveLimits,
  type ImageInfo,
  type ReadImageOptions,
} from './types.js';
import { isZstdMagic } from './zstd.js';
import { candidateOf, isSignatureTag, signatureBlobs, signatureTag, subjectOf } from '../trust/discover.js';
import type { SignatureCandidate, SignedSubject } from '../trust/verify.js';

/** All small JSON-looking blobs kept in memory together may not exceed this. */
const MAX_JSON_TOTAL_BYTES = 64 * 1024 * 1024;
/** Links followed to find a Docker archive entry (`<id>/layer.tar` → `../<hex>.tar`). */
const MAX_LINK_HOPS = 8;

const Layout = z.object({ imageLayoutVersion: z.string() });
/** A Docker archive's manifest.json. */
const DockerManifestSchema = z
  .array(
    z.object({
      Config: z.string(),
      RepoTags: z.array(z.string()).nullish(),
      Layers: z.array(z.string()),
    }),
  )
  .min(1, 'names no image');

interface FileSeen {
  size: number;
  /** Content, kept only for small documents that look like JSON. */
  json: Buffer | null;
  /** The first bytes (up to 4), to recognise compressed layers. */
  head: Buffer;
}

interface Collected {
  /** Regular files by normalised path. */
  files: Map<string, FileSeen>;
  /** Symbolic (relative to their directory) and hard (relative to the root) links. */
  links: Map<string, { hard: boolean; target: string }>;
}

const TOP_DOCUMENTS = new Set(['oci-layout', 'index.json', 'manifest.json']);

/** Streams the archive once, keeping file sizes, first bytes and the small JSON documents. */
async function collect(archivePath: string, gzip: boolean, opts: ReadImageOptions): Promise<Collected> {
  const limits = resolveLimits(opts.limits);
  const out: Collected = { files: new Map(), links: new Map() };
  let jsonTotal = 0;
  const walk = walkArchive(archivePath, gzip, limits, (info, entry) => {
    if (info.type === 'SymbolicLink' || info.type === 'Link') {
      if (entry.linkpath) out.links.set(info.path, { hard: info.type === 'Link', target: entry.linkpath });
      return void entry.resume();
    }
    const isFile = info.type === 'File' || info.type === 'OldFile' || info.type === 'ContiguousFile';
    if (!isFile) return void entry.resume();
    if (out.files.has(info.path)) throw invalid(info.path.startsWith('blobs/sha256/') ? `image archive holds blob sha256:${info.path.slice(13)} twice` : `image archive holds ${info.path} twice`);
    const seen: FileSeen = { size: info.size, json: null, head: Buffer.alloc(0) };
    out.files.set(info.path, seen);
    const top = TOP_DOCUMENTS.has(info.path);
    if (top && info.size > MAX_JSON_BLOB_BYTES) throw invalid(`${info.path} is ${info.size} bytes, over the ${MAX_JSON_BLOB_BYTES}-byte cap for JSON documents`);
    // JSON documents live at the top (manifest.json, a Docker config) or among the blobs.
    const mayBeJson = top || /^blobs\/sha256\/[a-f0-9]{64}$/.test(info.path) || /^[^/]+\.json$/.test(info.path);
    const keepable = top || (mayBeJson && info.size > 0 && info.size <= MAX_JSON_BLOB_BYTES && jsonTotal + info.size <= MAX_JSON_TOTAL_BYTES);
    const parts: Buffer[] = [];
    let looksJson: boolean | null = top ? true : keepable ? null : false;
    entry.on('data', (c: Buffer) => {
      if (seen.head.length < 4) seen.head = Buffer.concat([seen.head, c.subarray(0, 4 - seen.head.length)]);
      if (looksJson === null) {
        // Keep it only if it looks like a JSON object (layers start with gzip magic or a tar header).
        looksJson = c.toString('latin1', 0, 64).trimStart().startsWith('{');
        if (looksJson) jsonTotal += info.size;
      }
      if (looksJson) parts.push(c);
    });
    entry.on('end', () => {
      if (looksJson) seen.json = Buffer.concat(parts);
    });
  });
  await walk.done;
  return out;
}

class BlobReader {
  constructor(private readonly c: Collected) {}

  /** Checks that a blob exists with the descriptor's size; returns the hex of its digest. */
  present(d: Descriptor, what: string): string {
    const hex = sha256Hex(d.digest);
    if (!hex) throw invalid(`${what} has an unsupported or malformed digest "${d.digest}" (only sha256 is supported)`, { digest: d.digest });
    const seen = this.c.files.get(`blobs/sha256/${hex}`);
    if (!seen) throw invalid(`missing blob ${d.digest} (${what})`, { digest: d.digest });
    if (seen.size !== d.size) {
      throw invalid(`blob ${d.digest} (${what}) size mismatch: descriptor says ${d.size} bytes, archive holds ${seen.size}`, { digest: d.digest });
    }
    return hex;
  }

  /** A small JSON blob, verified against its descriptor's digest and size. */
  json<T>(d: Descriptor, schema: z.ZodType<T>, what: string): T {
    const hex = this.present(d, what);
    const seen = this.c.files.get(`blobs/sha256/${hex}`)!;
    if (d.size > MAX_JSON_BLOB_BYTES) throw invalid(`${what} ${d.digest} is ${d.size} bytes, over the ${MAX_JSON_BLOB_BYTES}-byte cap for JSON documents`);
    if (!seen.json) throw invalid(`${what} ${d.digest} is not a JSON document`, { digest: d.digest });
    const actual = createHash('sha256').update(seen.json).digest('hex');
    if (actual !== hex) throw invalid(`blob ${d.digest} (${what}) digest mismatch: content hashes to sha256:${actual}`, { digest: d.digest });
    return parseJson(seen.json, schema, `${what} ${d.digest}`);
  }
}

export async function readImage(archivePath: string, opts: ReadImageOptions = {}): Promise<ImageInfo> {
  return (await readImageDocuments(archivePath, opts)).info;
}

/** An image read from an archive with what a signature may name and the signatures inside it. */
export interface ImageDocuments {
  info: ImageInfo;
  /** The manifest (and the nested index that chose it, if any), with their bytes. */
  subjects: SignedSubject[];
  /** Signatures of those found in the archive: OCI 1.1 referrers and cosign's `sha256-<hex>.sig`. */
  signatures: SignatureCandidate[];
}

/** readImage, plus the documents signatures are checked against and the signatures in the archive. */
export async function readImageDocuments(archivePath: string, opts: ReadImageOptions = {}): Promise<ImageDocuments> {
  const limits = resolveLimits(opts.limits);
  await checkArchiveFile(archivePath, limits);
  const gzip = await isGzipFile(archivePath);
  const c = await collect(archivePath, gzip, opts);
  const isOci = c.files.has('index.json') || (c.files.has('oci-layout') && !c.files.has('manifest.json'));
  if (!isOci && c.files.has('manifest.json')) return readDocker(c, archivePath, gzip, opts);
  const r = readOci(c, archivePath, gzip, opts);
  return { ...r, signatures: archiveSignatures(c, r.subjects, r.index) };
}

/** The JSON of a blob of the archive, if its content hashes to its name. */
function verifiedBlob(c: Collected, digest: string): Buffer | null {
  const hex = sha256Hex(digest);
  const json = hex ? c.files.get(`blobs/sha256/${hex}`)?.json : null;
  if (!json || createHash('sha256').update(json).digest('hex') !== hex) return null;
  return json;
}

/**
 * Signatures of the subjects inside an OCI layout: every manifest among the blobs whose `subject`
 * is one of them (OCI 1.1 referrers, listed in index.json or not), and the manifests index.json
 * names `sha256-<hex>.sig` (cosign's classic tag, as skopeo copies it into a layout).
 */
function archiveSignatures(c: Collected, subjects: readonly SignedSubject[], index: Index): SignatureCandidate[] {
  const wanted = new Set(subjects.map((s) => s.digest));
  const manifests: { digest: string; doc: unknown; source: string }[] = [];
  const seen = new Set<string>();
  for (const [path, f] of c.files) {
    if (!f.json || !path.startsWith('blobs/sha256/') || f.json.length > MAX_JSON_BLOB_BYTES) continue;
    let doc: unknown;
    try {
      doc = JSON.parse(f.json.toString('utf8'));
    } catch {
      continue;
    }
    const subject = subjectOf(doc);
    const digest = `sha256:${path.slice('blobs/sha256/'.length)}`;
    if (subject === null || !wanted.has(subject) || !verifiedBlob(c, digest)) continue;
    seen.add(digest);
    manifests.push({ digest, doc, source: `referrer ${digest} in the archive` });
  }
  for (const s of subjects) {
    const tag = signatureTag(s.digest);
    for (const d of index.manifests.filter((m) => m.annotations?.[REF_NAME] === tag && !seen.has(m.digest))) {
      const bytes = verifiedBlob(c, d.digest);
      if (!bytes) continue;
      seen.add(d.digest);
      try {
        manifests.push({ digest: d.digest, doc: JSON.parse(bytes.toString('utf8')), source: `${tag} in the archive` });
      } catch {
        /* not a manifest: nothing to verify */
      }
    }
  }
  const out: SignatureCandidate[] = [];
  for (const m of manifests) {
    for (const b of signatureBlobs(m.doc)) {
      const bytes = verifiedBlob(c, b.digest);
      if (bytes && bytes.length === b.size) out.push(candidateOf(b, bytes, m.source));
    }
  }
  return out;
}

function readOci(c: Collected, archivePath: string, gzip: boolean, opts: ReadImageOptions): { info: ImageInfo; subjects: SignedSubject[]; index: Index } {
  const blobs = new BlobReader(c);
  const platform = opts.platform ?? { os: 'linux', architecture: hostArchitecture() };
  const layoutFile = c.files.get('oci-layout')?.json;
  if (!layoutFile) throw invalid('not an OCI image layout (nor a Docker archive): oci-layout is missing');
  const layout = parseJson(layoutFile, Layout, 'oci-layout');
  if (!/^1\.\d+\.\d+$/.test(layout.imageLayoutVersion)) throw invalid(`unsupported imageLayoutVersion "${layout.imageLayoutVersion}" (expected 1.x.y)`);
  const indexFile = c.files.get('index.json')?.json;
  if (!indexFile) throw invalid('not an OCI image layout: index.json is missing');
  const index = parseJson(indexFile, IndexSchema, 'index.json');

  // Signatures and other artifacts listed beside the image are not images to choose.
  const images = index.manifests.filter((d) => d.artifactType === undefined && !isSignatureTag(d.annotations?.[REF_NAME]));
  let desc = chooseManifest(images.length > 0 ? images : index.manifests, opts.ref, platform);
  if (!desc) throw invalid('index.json names no manifest');
  let outerAnnotations = { ...(desc.annotations ?? {}) };
  const subjects: SignedSubject[] = [];
  if (INDEX_MEDIA_TYPES.has(desc.mediaType)) {
    // One level of nested index (e.g. a multi-platform image under one ref name).
    const nested = blobs.json(desc, IndexSchema, 'nested image index');
    subjects.push({ digest: desc.digest, bytes: verifiedBlob(c, desc.digest)! });
    const inner = chooseManifest(nested.manifests, opts.ref, platform);
    if (!inner) throw invalid(`nested image index ${desc.digest} names no manifest`);
    if (INDEX_MEDIA_TYPES.has(inner.mediaType)) throw invalid(`image index nested more than one level (${inner.digest})`);
    outerAnnotations = { ...outerAnnotations, ...(inner.annotations ?? {}) };
    if (!inner.platform && desc.platform) inner.platform = desc.platform;
    desc = inner;
  }
  if (!MANIFEST_MEDIA_TYPES.has(desc.mediaType)) throw invalid(`unsupported manifest media type "${desc.mediaType}" (${desc.digest})`);
  const manifest = blobs.json(desc, ManifestSchema, 'manifest');
  checkManifest(desc, manifest);
  const config = blobs.json(manifest.config, ConfigSchema, 'image config');
  const info = imageInfoFrom({ manifestDesc: desc, manifest, config, outerAnnotations, blobs: { kind: 'archive', path: archivePath, gzip }, source: archivePath, format: 'oci' });
  manifest.layers.forEach((l, i) => blobs.present(l, `layer ${i}`));
  // The manifest first: it is what a signature must name (an index above it names it too).
  subjects.unshift({ digest: desc.digest, bytes: verifiedBlob(c, desc.digest)! });
  return { info, subjects, index };
}

/** The regular file an archive path names, following symlinks and hard links inside the archive. */
function resolveFile(c: Collected, path: string, what: string): { path: string; seen: FileSeen } {
  const n = normalizeEntryPath(path);
  if (!n.ok) throw invalid(`${what} names an unsafe path "${path}" (${n.reason})`);
  let p = n.path;
  for (let hop = 0; hop <= MAX_LINK_HOPS; hop++) {
    const seen = c.files.get(p);
    if (seen) return { path: p, seen };
    const link = c.links.get(p);
    if (!link) throw invalid(`${what} ${path} is missing from the archive`, { entry: path });
    const next = link.hard ? normalizeEntryPath(link.target) : checkSymlinkTarget(p, link.target);
    if (!next.ok) throw invalid(`${what} ${path} is a link that leaves the archive (${link.target})`, { entry: path });
    p = next.path;
  }
  throw invalid(`${what} ${path}: more than ${MAX_LINK_HOPS} links to follow`, { entry: path });
}

/** Strips the default registry and `localhost/` from a tag: `docker.io/library/x:1` → `x:1`. */
function shortTag(tag: string): string {
  return tag.replace(/^(docker\.io\/library\/|docker\.io\/|localhost\/)/, '');
}

/**
 * A Docker archive. Its config's digest is the sha256 of the config file; its layers' digests
 * are the config's `rootfs.diff_ids` (the sha256 of each uncompressed layer tar, which is what
 * the archive stores), checked while extracting. There is no manifest blob, so one is
 * synthesized, and its sha256 is the image's manifestDigest: the canonical OCI manifest
 *   {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
 *    "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":D,"size":N},
 *    "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":D,"size":N},...]}
 * serialised by JSON.stringify in exactly this key order, without whitespace — so the same
 * config and layers give the same digest on every device.
 */
function readDocker(c: Collected, archivePath: string, gzip: boolean, opts: ReadImageOptions): ImageDocuments {
  const list = parseJson(c.files.get('manifest.json')!.json!, DockerManifestSchema, 'Docker archive manifest.json');
  const ref = opts.ref;
  const chosen =
    (ref !== undefined && (list.find((m) => m.RepoTags?.includes(ref)) ?? list.find((m) => m.RepoTags?.some((t) => shortTag(t) === shortTag(ref))))) || list[0]!;

  const cfg = resolveFile(c, chosen.Config, 'image config');
  if (cfg.seen.size > MAX_JSON_BLOB_BYTES) throw invalid(`image config ${chosen.Config} is ${cfg.seen.size} bytes, over the ${MAX_JSON_BLOB_BYTES}-byte cap for JSON documents`);
  if (!cfg.seen.json) throw invalid(`image config ${chosen.Config} is not a JSON document`, { entry: chosen.Config });
  const configDigest = `sha256:${createHash('sha256').update(cfg.seen.json).digest('hex')}`;
  const config = parseJson(cfg.seen.json, ConfigSchema, `image config ${chosen.Config}`);
  const diffIds = config.rootfs?.diff_ids;
  if (!diffIds) throw invalid(`image config ${chosen.Config} has no rootfs.diff_ids`);
  if (diffIds.length !== chosen.Layers.length) {
    throw invalid(`Docker archive manifest.json names ${chosen.Layers.length} layers but the config's rootfs.diff_ids has ${diffIds.length}`);
  }

  const entries = new Map<string, string>();
  const layers = chosen.Layers.map((entry, i) => {
    const digest = diffIds[i]!;
    if (!sha256Hex(digest)) throw invalid(`layer ${i} has an unsupported or malformed diff_id "${digest}" (only sha256 is supported)`, { digest });
    const f = resolveFile(c, entry, `layer ${i}`);
    const h = f.seen.head;
    const packed = h.length >= 2 && h[0] === GZIP_MAGIC[0] && h[1] === GZIP_MAGIC[1] ? 'gzip' : isZstdMagic(h) ? 'zstd' : null;
    if (packed) {
      throw invalid(`Docker archive layer ${i} (${entry}) is ${packed}-compressed: its diff_id names the uncompressed tar, and smd reads Docker archives with uncompressed layers only (as docker save writes them)`, { digest, entry });
    }
    const known = entries.get(digest);
    if (known === undefined) entries.set(digest, f.path);
    return { mediaType: MEDIA_TYPES.ociLayer, digest, size: f.seen.size };
  });
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociManifest,
    config: { mediaType: MEDIA_TYPES.ociConfig, digest: configDigest, size: cfg.seen.size },
    layers,
  };
  const bytes = Buffer.from(JSON.stringify(manifest), 'utf8');
  const manifestDesc: Descriptor = { mediaType: MEDIA_TYPES.ociManifest, digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`, size: bytes.length };
  const info = imageInfoFrom({
    manifestDesc,
    manifest,
    config,
    outerAnnotations: {},
    blobs: { kind: 'archive', path: archivePath, gzip, entries },
    source: archivePath,
    format: 'docker',
  });
  // A Docker archive carries no signatures; one given beside it names the synthesized manifest.
  return { info: { ...info, refName: chosen.RepoTags?.[0] ?? null }, subjects: [{ digest: manifestDesc.digest, bytes }], signatures: [] };
}
