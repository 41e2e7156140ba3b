/**
 * The OCI documents of an image (index, manifest, config), their checks and the ImageInfo built
 * from them: shared by the archive reader (reader.ts) and the registry client (sources.ts).
 * Kept apart from reader.ts so that the daemon's start path (sources.ts is loaded at start) does
 * not load tar, which only an install needs (~110 KB of the start bundle).
 */
import * as z from 'zod';
import { SmError } from '../errors.js';
import { sha256Hex } from './paths.js';
import { CONFIG_MEDIA_TYPES, LAYER_MEDIA_TYPES, MANIFEST_MEDIA_TYPES, type BlobSource, type ImageInfo, type LayerDescriptor } from './types.js';

export const REF_NAME = 'org.opencontainers.image.ref.name';

export function invalid(message: string, details?: Record<string, unknown>): SmError {
  return new SmError('INVALID_IMAGE', message, details);
}

const Annotations = z.record(z.string(), z.string());
const Platform = z.object({
  architecture: z.string(),
  os: z.string(),
  'os.version': z.string().optional(),
  variant: z.string().optional(),
});
export const DescriptorSchema = z.object({
  mediaType: z.string(),
  digest: z.string(),
  size: z.number().int().nonnegative(),
  annotations: Annotations.optional(),
  platform: Platform.optional(),
  /** OCI 1.1: set on artifacts (signatures, attestations) listed beside images. */
  artifactType: z.string().optional(),
});
export type Descriptor = z.infer<typeof DescriptorSchema>;
export const IndexSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  manifests: z.array(DescriptorSchema),
  annotations: Annotations.optional(),
});
export type Index = z.infer<typeof IndexSchema>;
export const ManifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  config: DescriptorSchema,
  layers: z.array(DescriptorSchema),
  annotations: Annotations.optional(),
});
export type Manifest = z.infer<typeof ManifestSchema>;
const StringList = z.array(z.string()).nullish();
export const ConfigSchema = z.object({
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
      ExposedPorts: z.record(z.string(), z.unknown()).nullish(),
    })
    .nullish(),
  /** Digests of the uncompressed layer tars (what a Docker archive's layers are checked against). */
  rootfs: z.object({ type: z.string().optional(), diff_ids: z.array(z.string()) }).nullish(),
});
export type Config = z.infer<typeof ConfigSchema>;
export function parseJson<T>(buf: Buffer, schema: z.ZodType<T>, what: string): T {
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

/** The media-type checks of a manifest against the descriptor that named it. */
export function checkManifest(desc: Descriptor, manifest: Manifest): void {
  if (!MANIFEST_MEDIA_TYPES.has(desc.mediaType)) throw invalid(`unsupported manifest media type "${desc.mediaType}" (${desc.digest})`);
  if (manifest.mediaType !== undefined && manifest.mediaType !== desc.mediaType) {
    throw invalid(`manifest ${desc.digest} says media type "${manifest.mediaType}" but index says "${desc.mediaType}"`);
  }
  if (!CONFIG_MEDIA_TYPES.has(manifest.config.mediaType)) throw invalid(`unsupported config media type "${manifest.config.mediaType}" (${manifest.config.digest})`);
}

/**
 * Builds an ImageInfo from verified documents: the manifest's descriptor (as the index named
 * it, with its platform), the manifest, the image config, and the annotations of the index
 * descriptors above it. Checks the media types (manifest, config, layers); the blobs' presence
 * and digests are the caller's and extractLayers' business.
 */
export function imageInfoFrom(args: {
  manifestDesc: Descriptor;
  manifest: Manifest;
  config: Config;
  outerAnnotations: Record<string, string>;
  blobs: BlobSource;
  source: string;
  format: ImageInfo['format'];
}): ImageInfo {
  const { manifestDesc: desc, manifest, config } = args;
  checkManifest(desc, manifest);
  const layers: LayerDescriptor[] = manifest.layers.map((l, i) => {
    const compression = LAYER_MEDIA_TYPES.get(l.mediaType);
    if (compression === undefined) throw invalid(`unsupported layer media type "${l.mediaType}" (layer ${i}, ${l.digest})`, { digest: l.digest });
    if (!sha256Hex(l.digest)) throw invalid(`layer ${i} has an unsupported or malformed digest "${l.digest}" (only sha256 is supported)`, { digest: l.digest });
    return { digest: l.digest, size: l.size, mediaType: l.mediaType, compression };
  });
  const annotations = { ...args.outerAnnotations, ...(manifest.annotations ?? {}) };
  const cc = config.config ?? {};
  return {
    source: args.source,
    format: args.format,
    blobs: args.blobs,
    manifestDigest: desc.digest,
    manifestMediaType: desc.mediaType,
    configDigest: manifest.config.digest,
    config: {
      entrypoint: cc.Entrypoint ?? [],
      cmd: cc.Cmd ?? [],
      env: cc.Env ?? [],
      workingDir: cc.WorkingDir ?? '',
      user: cc.User ?? '',
      ...(cc.ExposedPorts && Object.keys(cc.ExposedPorts).length ? { exposedPorts: Object.keys(cc.ExposedPorts) } : {}),
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
  };
}
