/** Shapes and constants of smd's image reader (OCI layouts, Docker archives, registry documents). */

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

/** How a layer blob is compressed (decided by its media type, checked against its magic bytes). */
export type Compression = 'none' | 'gzip' | 'zstd';

export interface LayerDescriptor {
  /** `sha256:<64 hex>` of the blob as stored (compressed if compressed). */
  digest: string;
  /** Size of the blob as stored, in bytes. */
  size: number;
  mediaType: string;
  compression: Compression;
}

/**
 * Where the blobs of an image are read from.
 * - `archive`: entries of a tar (gzip when `gzip`). `entries` maps a digest (`sha256:<hex>`) to
 *   its entry path in the archive (Docker archives); absent, a blob is `blobs/sha256/<hex>`.
 * - `dir`: files `<root>/<hex>` (a content-addressed download cache).
 */
export type BlobSource = { kind: 'archive'; path: string; gzip: boolean; entries?: ReadonlyMap<string, string> } | { kind: 'dir'; root: string };

export interface ImageConfig {
  entrypoint: string[];
  cmd: string[];
  env: string[];
  workingDir: string;
  user: string;
  /** The config's ExposedPorts keys (`8080/tcp`), when it has any: the default `port` of `exposedPorts`. */
  exposedPorts?: string[];
}

export interface ImageInfo {
  /** Where the image came from, for messages (an archive path, a registry reference). */
  source: string;
  /** OCI image layout archive, Docker archive, or documents fetched from a registry. */
  format: 'oci' | 'docker' | 'registry';
  /** Where extractLayers reads the layer blobs. */
  blobs: BlobSource;
  /** Digest of the chosen manifest (Docker archive: of the OCI manifest synthesized by reader.ts). */
  manifestDigest: string;
  manifestMediaType: string;
  configDigest: string;
  config: ImageConfig;
  /** Layers in order, bottom first. */
  layers: LayerDescriptor[];
  /** Index descriptor annotations overlaid by the manifest's own annotations. */
  annotations: Record<string, string>;
  /** `org.opencontainers.image.ref.name` of the chosen manifest (Docker archive: its first RepoTag), if any. */
  refName: string | null;
  platform: { os: string | null; architecture: string | null; variant: string | null };
  /** Platform `os.version` (index descriptor first, then image config), else null. */
  osVersion: string | null;
  /** Annotation `io.smd.layer.id`, else null. */
  layerId: string | null;
}

export interface ReadImageOptions {
  /**
   * Wanted `org.opencontainers.image.ref.name` (OCI; falls back to the host platform, then the
   * first) or RepoTag (Docker archive; falls back to the first image).
   */
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
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

export const INDEX_MEDIA_TYPES: ReadonlySet<string> = new Set([MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerList]);
export const MANIFEST_MEDIA_TYPES: ReadonlySet<string> = new Set([MEDIA_TYPES.ociManifest, MEDIA_TYPES.dockerManifest]);
export const CONFIG_MEDIA_TYPES: ReadonlySet<string> = new Set([MEDIA_TYPES.ociConfig, MEDIA_TYPES.dockerConfig]);

/** Layer media types understood, mapped to their compression. */
export const LAYER_MEDIA_TYPES: ReadonlyMap<string, Compression> = new Map<string, Compression>([
  ['application/vnd.oci.image.layer.v1.tar', 'none'],
  ['application/vnd.oci.image.layer.v1.tar+gzip', 'gzip'],
  ['application/vnd.oci.image.layer.v1.tar+zstd', 'zstd'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar', 'none'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', 'gzip'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar+zstd', 'zstd'],
  ['application/vnd.docker.image.rootfs.diff.tar.gzip', 'gzip'],
]);

export function resolveLimits(partial: Partial<ImageLimits> | undefined): ImageLimits {
  const l = { ...DEFAULT_IMAGE_LIMITS, ...(partial ?? {}) };
  for (const k of ['maxArchiveBytes', 'maxUnpackedBytes', 'maxEntries'] as const) {
    if (!Number.isFinite(l[k]) || l[k] <= 0) throw new TypeError(`image limit ${k} must be a positive number`);
  }
  return l;
}
