/** OCI image archives: read (index → manifest → config) and extract layers safely. */
export { readImage, chooseManifest } from './reader.js';
export { extractLayers } from './extract.js';
export { DEFAULT_IMAGE_LIMITS, MEDIA_TYPES, LAYER_MEDIA_TYPES } from './types.js';
export type { ImageInfo, ImageConfig, ImageLimits, LayerDescriptor, ReadImageOptions, ExtractOptions, ExtractResult, ExtractedLayer } from './types.js';
