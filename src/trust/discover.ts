/**
 * Where signatures of an image live, and how a signature manifest becomes candidates to verify
 * (pure; the archive reader and the registry client fetch the bytes):
 *
 * - OCI 1.1 referrers: manifests whose `subject` is the image manifest, with `artifactType`
 *   `application/vnd.dev.sigstore.bundle.v0.3+json` and the bundle as their layer (cosign's
 *   bundle spec); in a registry listed by `GET /v2/<repo>/referrers/<digest>`, else by the
 *   referrers tag `sha256-<hex>` (an index); in an OCI layout listed in index.json, or only
 *   present among its blobs.
 * - cosign's classic signatures: tag `sha256-<hex>.sig`, a manifest whose layers are simple-signing
 *   payloads (`application/vnd.dev.cosign.simplesigning.v1+json`) with the signature in the
 *   annotation `dev.cosignproject.cosign/signature`.
 */
import { BUNDLE_MEDIA_TYPES, COSIGN_SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, type SignatureCandidate } from './verify.js';

/** Signature payloads are small JSON documents; bigger ones are not read. */
export const MAX_SIGNATURE_BYTES = 1024 * 1024;
/** Referrers (and signature layers) considered per image: a hostile registry cannot make us fetch more. */
export const MAX_REFERRERS = 16;

const HEX = /^sha256:([a-f0-9]{64})$/;

/** cosign's classic signature tag of a digest: `sha256-<hex>.sig`. */
export function signatureTag(digest: string): string {
  return `${digest.replace(':', '-')}.sig`;
}

/** The OCI 1.1 referrers tag of a digest (the fallback without a referrers API): `sha256-<hex>`. */
export function referrersTag(digest: string): string {
  return digest.replace(':', '-');
}

/** Whether a tag (ref name) is one of the signature/referrer tags rather than an image's. */
export function isSignatureTag(name: string | undefined): boolean {
  return name !== undefined && /^sha256-[a-f0-9]{64}(\.sig|\.att|\.sbom)?$/.test(name);
}

export interface SignatureBlob {
  digest: string;
  size: number;
  kind: 'bundle' | 'simple-signing';
  /** Simple signing: the base64 signature from the layer's annotation. */
  signature?: string;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The subject digest of a manifest document (OCI 1.1), or null. */
export function subjectOf(doc: unknown): string | null {
  return isObject(doc) && isObject(doc.subject) && typeof doc.subject.digest === 'string' ? doc.subject.digest : null;
}

/** The layers of a signature manifest that hold signatures (bundles or simple-signing payloads). */
export function signatureBlobs(doc: unknown): SignatureBlob[] {
  if (!isObject(doc) || !Array.isArray(doc.layers)) return [];
  const out: SignatureBlob[] = [];
  for (const l of doc.layers.slice(0, MAX_REFERRERS)) {
    if (!isObject(l) || typeof l.digest !== 'string' || !HEX.test(l.digest) || typeof l.size !== 'number' || l.size < 0 || l.size > MAX_SIGNATURE_BYTES) continue;
    if (typeof l.mediaType === 'string' && BUNDLE_MEDIA_TYPES.has(l.mediaType)) out.push({ digest: l.digest, size: l.size, kind: 'bundle' });
    else if (l.mediaType === SIMPLE_SIGNING_MEDIA_TYPE) {
      const annotations = isObject(l.annotations) ? l.annotations : {};
      const sig = annotations[COSIGN_SIGNATURE_ANNOTATION];
      out.push({ digest: l.digest, size: l.size, kind: 'simple-signing', signature: typeof sig === 'string' ? sig : '' });
    }
  }
  return out;
}

/** A signature blob's bytes as a candidate (a bundle that is not JSON is still a candidate: it fails verification, with a reason). */
export function candidateOf(blob: SignatureBlob, bytes: Buffer, source: string): SignatureCandidate {
  if (blob.kind === 'simple-signing') return { kind: 'simple-signing', source, payload: bytes, signature: blob.signature ?? '' };
  let bundle: unknown = null;
  try {
    bundle = JSON.parse(bytes.toString('utf8'));
  } catch {
    /* verifyBundle says "not a sigstore bundle" */
  }
  return { kind: 'bundle', source, bundle };
}

/** Descriptors of an index (a referrers response or the referrers tag) that may be signatures. */
export function referrerDescriptors(index: unknown): { digest: string; size: number; mediaType: string }[] {
  if (!isObject(index) || !Array.isArray(index.manifests)) return [];
  return index.manifests
    .filter((d): d is { digest: string; size: number; mediaType: string; artifactType?: unknown } => isObject(d) && typeof d.digest === 'string' && HEX.test(d.digest) && typeof d.size === 'number' && typeof d.mediaType === 'string')
    .filter((d) => d.artifactType === undefined || (typeof d.artifactType === 'string' && (BUNDLE_MEDIA_TYPES.has(d.artifactType) || d.artifactType.startsWith('application/vnd.dev.cosign.'))))
    .slice(0, MAX_REFERRERS)
    .map((d) => ({ digest: d.digest, size: d.size, mediaType: d.mediaType }));
}
