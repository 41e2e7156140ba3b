/**
 * Service images: read an OCI image layout or Docker archive (or build the same ImageInfo from
 * registry documents with imageInfoFrom), and extract layers safely from an archive or a blob
 * directory.
 */
export { readImage } from './reader.js';
export { chooseManifest, imageInfoFrom, parseJson, DescriptorSchema, IndexSchema, ManifestSchema, ConfigSchema } from './documents.js';
export type { Descriptor, Index, Manifest, Config } from './documents.js';
export { extractLayers } from './extract.js';
export { createZstdDecompressor, isZstdMagic, ZSTD_MAGIC, ZSTD_MEMORY_LIMIT } from './zstd.js';
export { DEFAULT_IMAGE_LIMITS, MEDIA_TYPES, LAYER_MEDIA_TYPES } from './types.js';
export type { BlobSource, Compression, ImageInfo, ImageConfig, ImageLimits, LayerDescriptor, ReadImageOptions, ExtractOptions, ExtractResult, ExtractedLayer } from './types.js';
