/**
 * readImage: the first streaming pass over an OCI image archive. It collects the sizes of all
 * blobs and the (small, capped) JSON blobs, then picks and verifies index → manifest → config.
 * Layer blobs are only checked for presence and size here; their digests are verified while
 * they are extracted (extract.ts).
 */
import { createHash } from 'node:crypto';
import * as z from 'zod';
import { checkArchiveFile, invalid, isGzipFile, walkArchive } from './archive.js';
import { hostArchitecture, sha256Hex } from './paths.js';
import {
  CONFIG_MEDIA_TYPES,
  INDEX_MEDIA_TYPES,
  LAYER_MEDIA_TYPES,
  MANIFEST_MEDIA_TYPES,
  MAX_JSON_BLOB_BYTES,
  resolveLimits,
  type ImageInfo,
  type LayerDescriptor,
  type ReadImageOptions,
} from './types.js';

/** All small JSON-looking blobs kept in memory together may not exceed this. */
const MAX_JSON_TOTAL_BYTES = 64 * 1024 * 1024;
const REF_NAME = 'org.opencontainers.image.ref.name';

const Annotations = z.record(z.string(), z.string());
const Platform = z.object({
  architecture: z.string(),
  os: z.string(),
  'os.version': z.string().optional(),
  variant: z.string().optional(),
});
const Descriptor = z.object({
  mediaType: z.string(),
  digest: z.string(),
  size: z.number().int().nonnegative(),
  annotations: Annotations.optional(),
  platform: Platform.optional(),
});
type Descriptor = z.infer<typeof Descriptor>;
const Layout = z.object({ imageLayoutVersion: z.string() });
const Index = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  manifests: z.array(Descriptor),
  annotations: Annotations.optional(),
});
const Manifest = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  config: Descriptor,
  layers: z.array(Descriptor),
  annotations: Annotations.optional(),
});
const StringList = z.array(z.string()).nullish();
const Config = z.object({
  architecture: z.string().optional(),
  os: z.string().optional(),
  'os.version': z.string().optional(),
  variant: z.string().optional(),
  config: z
    .object({
      Entrypoint: StringList,
      Cmd: StringList,
      Env: StringList,
      WorkingDir: z.string().nullish(),
      User: z.string().nullish(),
    })
    .nullish(),
});

interface BlobSeen {
  size: number;
  /** Content, kept only for small blobs that look like JSON. */
  json: Buffer | null;
}

interface Collected {
  layout: Buffer | null;
  index: Buffer | null;
  blobs: Map<string, BlobSeen>;
}

function parseJson<T>(buf: Buffer, schema: z.ZodType<T>, what: string): T {
  let value: unknown;
  try {
    value = JSON.parse(buf.toString('utf8'));
  } catch (err) {
    throw invalid(`${what} is not valid JSON: ${(err as Error).message}`);
  }
  const r = schema.safeParse(value);
  if (!r.success) {
    const why = r.error.issues
      .slice(0, 3)
      .map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`)
      .join('; ');
    throw invalid(`${what} is not a valid document: ${why}`);
  }
  return r.data;
}

/** Streams the archive once, keeping blob sizes and the small JSON documents. */
async function collect(archivePath: string, gzip: boolean, opts: ReadImageOptions): Promise<Collected> {
  const limits = resolveLimits(opts.limits);
  const out: Collected = { layout: null, index: null, blobs: new Map() };
  let jsonTotal = 0;
  const walk = walkArchive(archivePath, gzip, limits, (info, entry) => {
    const isFile = info.type === 'File' || info.type === 'OldFile' || info.type === 'ContiguousFile';
    const blob = /^blobs\/([^/]+)\/([^/]+)$/.exec(info.path);
    const top = info.path === 'oci-layout' || info.path === 'index.json';
    if (!isFile || (!blob && !top)) return void entry.resume();
    if (top) {
      if (info.size > MAX_JSON_BLOB_BYTES) throw invalid(`${info.path} is ${info.size} bytes, over the ${MAX_JSON_BLOB_BYTES}-byte cap for JSON documents`);
      if ((info.path === 'index.json' ? out.index : out.layout) !== null) throw invalid(`image archive holds ${info.path} twice`);
      const parts: Buffer[] = [];
      entry.on('data', (c: Buffer) => parts.push(c));
      entry.on('end', () => {
        if (info.path === 'index.json') out.index = Buffer.concat(parts);
        else out.layout = Buffer.concat(parts);
      });
      return;
    }
    const [, alg, hex] = blob!;
    if (alg !== 'sha256' || !/^[a-f0-9]{64}$/.test(hex!)) return void entry.resume();
    if (out.blobs.has(hex!)) throw invalid(`image archive holds blob sha256:${hex} twice`);
    const seen: BlobSeen = { size: info.size, json: null };
    out.blobs.set(hex!, seen);
    if (info.size > MAX_JSON_BLOB_BYTES || info.size === 0 || jsonTotal + info.size > MAX_JSON_TOTAL_BYTES) return void entry.resume();
    // Keep it only if it looks like a JSON object (layers start with gzip magic or a tar header).
    const parts: Buffer[] = [];
    let looksJson: boolean | null = null;
    entry.on('data', (c: Buffer) => {
      if (looksJson === null) {
        const first = c.toString('latin1', 0, 64).trimStart();
        looksJson = first.startsWith('{');
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
    const seen = this.c.blobs.get(hex);
    if (!seen) throw invalid(`missing blob ${d.digest} (${what})`, { digest: d.digest });
    if (seen.size !== d.size) {
      throw invalid(`blob ${d.digest} (${what}) size mismatch: descriptor says ${d.size} bytes, archive holds ${seen.size}`, { digest: d.digest });
    }
    return hex;
  }

  /** A small JSON blob, verified against its descriptor's digest and size. */
  json<T>(d: Descriptor, schema: z.ZodType<T>, what: string): T {
    const hex = this.present(d, what);
    const seen = this.c.blobs.get(hex)!;
    if (d.size > MAX_JSON_BLOB_BYTES) throw invalid(`${what} ${d.digest} is ${d.size} bytes, over the ${MAX_JSON_BLOB_BYTES}-byte cap for JSON documents`);
    if (!seen.json) throw invalid(`${what} ${d.digest} is not a JSON document`, { digest: d.digest });
    const actual = createHash('sha256').update(seen.json).digest('hex');
    if (actual !== hex) throw invalid(`blob ${d.digest} (${what}) digest mismatch: content hashes to sha256:${actual}`, { digest: d.digest });
    return parseJson(seen.json, schema, `${what} ${d.digest}`);
  }
}

/** Chooses a descriptor: matching ref, else host platform, else one without platform, else the first. */
export function chooseManifest(list: Descriptor[], ref: string | undefined, platform: { os: string; architecture: string }): Descriptor | undefined {
  if (ref !== undefined) {
    const byRef = list.find((d) => d.annotations?.[REF_NAME] === ref);
    if (byRef) return byRef;
  }
  return (
    list.find((d) => d.platform && d.platform.os === platform.os && d.platform.architecture === platform.architecture) ??
    list.find((d) => !d.platform) ??
    list[0]
  );
}

export async function readImage(archivePath: string, opts: ReadImageOptions = {}): Promise<ImageInfo> {
  const limits = resolveLimits(opts.limits);
  await checkArchiveFile(archivePath, limits);
  const gzip = await isGzipFile(archivePath);
  const c = await collect(archivePath, gzip, opts);
  const blobs = new BlobReader(c);
  const platform = opts.platform ?? { os: 'linux', architecture: hostArchitecture() };

  if (!c.layout) throw invalid('not an OCI image layout: oci-layout is missing');
  const layout = parseJson(c.layout, Layout, 'oci-layout');
  if (!/^1\.\d+\.\d+$/.test(layout.imageLayoutVersion)) throw invalid(`unsupported imageLayoutVersion "${layout.imageLayoutVersion}" (expected 1.x.y)`);
  if (!c.index) throw invalid('not an OCI image layout: index.json is missing');
  const index = parseJson(c.index, Index, 'index.json');

  let desc = chooseManifest(index.manifests, opts.ref, platform);
  if (!desc) throw invalid('index.json names no manifest');
  let outerAnnotations = { ...(desc.annotations ?? {}) };
  if (INDEX_MEDIA_TYPES.has(desc.mediaType)) {
    // One level of nested index (e.g. a multi-platform image under one ref name).
    const nested = blobs.json(desc, Index, 'nested image index');
    const inner = chooseManifest(nested.manifests, opts.ref, platform);
    if (!inner) throw invalid(`nested image index ${desc.digest} names no manifest`);
    if (INDEX_MEDIA_TYPES.has(inner.mediaType)) throw invalid(`image index nested more than one level (${inner.digest})`);
    outerAnnotations = { ...outerAnnotations, ...(inner.annotations ?? {}) };
    if (!inner.platform && desc.platform) inner.platform = desc.platform;
    desc = inner;
  }
  if (!MANIFEST_MEDIA_TYPES.has(desc.mediaType)) throw invalid(`unsupported manifest media type "${desc.mediaType}" (${desc.digest})`);
  const manifest = blobs.json(desc, Manifest, 'manifest');
  if (manifest.mediaType !== undefined && manifest.mediaType !== desc.mediaType) {
    throw invalid(`manifest ${desc.digest} says media type "${manifest.mediaType}" but index says "${desc.mediaType}"`);
  }
  if (!CONFIG_MEDIA_TYPES.has(manifest.config.mediaType)) throw invalid(`unsupported config media type "${manifest.config.mediaType}" (${manifest.config.digest})`);
  const config = blobs.json(manifest.config, Config, 'image config');

  const layers: LayerDescriptor[] = manifest.layers.map((l, i) => {
    const gz = LAYER_MEDIA_TYPES.get(l.mediaType);
    if (gz === undefined) throw invalid(`unsupported layer media type "${l.mediaType}" (layer ${i}, ${l.digest})`, { digest: l.digest });
    blobs.present(l, `layer ${i}`);
    return { digest: l.digest, size: l.size, mediaType: l.mediaType, gzip: gz };
  });

  const annotations = { ...outerAnnotations, ...(manifest.annotations ?? {}) };
  const cc = config.config ?? {};
  return {
    archivePath,
    manifestDigest: desc.digest,
    manifestMediaType: desc.mediaType,
    configDigest: manifest.config.digest,
    config: {
      entrypoint: cc.Entrypoint ?? [],
      cmd: cc.Cmd ?? [],
      env: cc.Env ?? [],
      workingDir: cc.WorkingDir ?? '',
      user: cc.User ?? '',
    },
    layers,
    annotations,
    refName: annotations[REF_NAME] ?? null,
    platform: {
      os: desc.platform?.os ?? config.os ?? null,
      architecture: desc.platform?.architecture ?? config.architecture ?? null,
      variant: desc.platform?.variant ?? config.variant ?? null,
    },
    osVersion: desc.platform?.['os.version'] ?? config['os.version'] ?? null,
    layerId: annotations['io.smd.layer.id'] ?? null,
    archiveGzip: gzip,
  };
}
