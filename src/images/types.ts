/** Shapes and constants of smd's OCI image reader. */

/** Caps that bound what a (possibly hostile) image archive may cost. */
export interface ImageLimits {
  /** Size of the archive file, and of its tar stream once un-gzipped. */
  maxArchiveBytes: number;
  /** Sum of the uncompressed layer tar streams extracted in one call (≥ the sum of file sizes). */
  maxUnpackedBytes: number;
  /** Entries in the outer archive (readImage) and in the layers extracted in one call. */
  maxEntries: number;
}

export const DEFAULT_IMAGE_LIMITS: Readonly<ImageLimits> = Object.freeze({
  maxArchiveBytes: 2 * 1024 ** 3,
  maxUnpackedBytes: 4 * 1024 ** 3,
  maxEntries: 200_000,
});

/** JSON blobs (index, manifest, config) bigger than this are refused. */
export const MAX_JSON_BLOB_BYTES = 4 * 1024 * 1024;

export interface LayerDescriptor {
  /** `sha256:<64 hex>` of the blob as stored (compressed if gzip). */
  digest: string;
  /** Size of the blob as stored, in bytes. */
  size: number;
  mediaType: string;
  /** True when the blob is gzip-compressed (decided by the media type). */
  gzip: boolean;
}

export interface ImageConfig {
  entrypoint: string[];
  cmd: string[];
  env: string[];
  workingDir: string;
  user: string;
}

export interface ImageInfo {
  /** Path of the archive that was read. */
  archivePath: string;
  /** Digest of the chosen manifest. */
  manifestDigest: string;
  manifestMediaType: string;
  configDigest: string;
  config: ImageConfig;
  /** Layers in order, bottom first. */
  layers: LayerDescriptor[];
  /** Index descriptor annotations overlaid by the manifest's own annotations. */
  annotations: Record<string, string>;
  /** `org.opencontainers.image.ref.name` of the chosen manifest, if any. */
  refName: string | null;
  platform: { os: string | null; architecture: string | null; variant: string | null };
  /** Platform `os.version` (index descriptor first, then image config), else null. */
  osVersion: string | null;
  /** Annotation `io.smd.layer.id`, else null. */
  layerId: string | null;
  /** Whether the outer archive is gzip-compressed. */
  archiveGzip: boolean;
}

export interface ReadImageOptions {
  /** Wanted `org.opencontainers.image.ref.name`; falls back to the host platform, then the first. */
  ref?: string;
  limits?: Partial<ImageLimits>;
  /** Platform used for the choice (default linux + the host's architecture). */
  platform?: { os: string; architecture: string };
}

export interface ExtractOptions {
  /** Layer digests to unpack (each must be a layer of the image). */
  wanted: ReadonlySet<string>;
  /** Final directory of a layer; its staging directory is created beside it. */
  destFor: (digest: string) => string;
  limits?: Partial<ImageLimits>;
  /** Called with compressed bytes of wanted blobs read so far, and their total. */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
}

export interface ExtractedLayer {
  digest: string;
  path: string;
  /** Sum of the regular files' sizes. */
  unpackedBytes: number;
  entries: number;
}

export interface ExtractResult {
  /** Layers unpacked by this call and renamed into place. */
  extracted: ExtractedLayer[];
  /** Wanted layers whose final directory already existed (not unpacked again). */
  present: string[];
}

export const MEDIA_TYPES = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

export const INDEX_MEDIA_TYPES: ReadonlySet<string> = new Set([MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerList]);
export const MANIFEST_MEDIA_TYPES: ReadonlySet<string> = new Set([MEDIA_TYPES.ociManifest, MEDIA_TYPES.dockerManifest]);
export const CONFIG_MEDIA_TYPES: ReadonlySet<string> = new Set([MEDIA_TYPES.ociConfig, MEDIA_TYPES.dockerConfig]);

/** Layer media types understood, mapped to "is gzip". */
export const LAYER_MEDIA_TYPES: ReadonlyMap<string, boolean> = new Map([
  ['application/vnd.oci.image.layer.v1.tar', false],
  ['application/vnd.oci.image.layer.v1.tar+gzip', true],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar', false],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', true],
  ['application/vnd.docker.image.rootfs.diff.tar.gzip', true],
]);

export function resolveLimits(partial: Partial<ImageLimits> | undefined): ImageLimits {
  const l = { ...DEFAULT_IMAGE_LIMITS, ...(partial ?? {}) };
  for (const k of ['maxArchiveBytes', 'maxUnpackedBytes', 'maxEntries'] as const) {
    if (!Number.isFinite(l[k]) || l[k] <= 0) throw new TypeError(`image limit ${k} must be a positive number`);
  }
  return l;
}
