/**
 * The trust policy in force (`images.trust`, SPEC 13) and the pinned keys it verifies with.
 *
 *   require            an image installs only with a valid signature by a trusted key over its manifest;
 *   verify-if-present  an unsigned image installs (signedBy null); one that carries signatures installs
 *                      only if one of them is valid (a signature by an unknown key is not valid);
 *   off                nothing is looked for or checked.
 *
 * `require` is the default when keys are configured, `off` without keys.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { SmError } from '../errors.js';
import { verifyCandidate, type SignatureCandidate, type SignedSubject, type TrustedKey, type Verdict } from './verify.js';

export const TRUST_POLICIES = ['require', 'verify-if-present', 'off'] as const;
export type TrustPolicyName = (typeof TRUST_POLICIES)[number];

export interface TrustConfig {
  keys: { id: string; publicKey: string }[];
  policy?: TrustPolicyName | undefined;
}

/** What system.info shows. */
export interface TrustSummary {
  policy: TrustPolicyName;
  keys: { id: string; algorithm: TrustedKey['algorithm'] }[];
}

const configError = (key: string, why: string) => new SmError('INTERNAL', `invalid configuration: "${key}": ${why}`, { key });

/** A PEM public key as a TrustedKey; throws a message naming what is wrong with it. */
export function parsePublicKey(id: string, pem: string | Buffer): TrustedKey {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (err) {
    throw new Error(`not a PEM public key (${(err as Error).message})`);
  }
  if (key.asymmetricKeyType === 'ed25519') return { id, key, algorithm: 'ed25519' };
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return { id, key, algorithm: 'ecdsa-p256' };
  const what = key.asymmetricKeyType === 'ec' ? `an EC key on ${key.asymmetricKeyDetails?.namedCurve ?? 'an unknown curve'}` : `a ${key.asymmetricKeyType ?? 'unknown'} key`;
  throw new Error(`${what}: only ECDSA P-256 and Ed25519 keys are accepted`);
}

/** Reads the configured key files; a missing or unusable one is a configuration error naming it. */
export function loadTrust(cfg: TrustConfig): Trust {
  const keys = cfg.keys.map((k, i) => {
    const where = `images.trust.keys.${i}.publicKey`;
    let pem: Buffer;
    try {
      pem = readFileSync(k.publicKey);
    } catch (err) {
      throw configError(where, `cannot read ${k.publicKey}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    try {
      return parsePublicKey(k.id, pem);
    } catch (err) {
      throw configError(where, `${k.publicKey}: ${(err as Error).message}`);
    }
  });
  const policy = cfg.policy ?? (keys.length > 0 ? 'require' : 'off');
  if (policy !== 'off' && keys.length === 0) throw configError('images.trust.policy', `"${policy}" needs at least one key in images.trust.keys`);
  return new Trust(policy, keys);
}

export class Trust {
  constructor(
    readonly policy: TrustPolicyName,
    readonly keys: readonly TrustedKey[],
  ) {}

  static off(): Trust {
    return new Trust('off', []);
  }

  /** Whether signatures are looked for at all. */
  get active(): boolean {
    return this.policy !== 'off';
  }

  summary(): TrustSummary {
    return { policy: this.policy, keys: this.keys.map((k) => ({ id: k.id, algorithm: k.algorithm })) };
  }

  verify(candidates: readonly SignatureCandidate[], subjects: readonly SignedSubject[]): Verdict[] {
    return candidates.map((c) => verifyCandidate(c, subjects, this.keys));
  }

  /**
   * The policy's decision over everything found: the id of the key that signed, null for an
   * unsigned image that the policy lets in, or UNTRUSTED naming the image and why.
   */
  decide(image: string, subjects: readonly SignedSubject[], verdicts: readonly Verdict[], searched: readonly string[]): string | null {
    if (!this.active) return null;
    const good = verdicts.find((v) => v.ok);
    if (good?.ok) return good.keyId;
    if (verdicts.length === 0 && this.policy === 'verify-if-present') return null;
    const digest = subjects[0]?.digest ?? null;
    const why =
      verdicts.length === 0
        ? `it carries no signature (looked for: ${searched.join('; ') || 'nothing'})`
        : verdicts.map((v) => `${v.source}: ${v.ok ? 'valid' : v.reason}`).join('; ');
    throw new SmError('UNTRUSTED', `image ${image}${digest ? ` (${digest})` : ''} is not trusted under images.trust.policy "${this.policy}": ${why}`, {
      image,
      manifestDigest: digest,
      policy: this.policy,
      signatures: verdicts.map((v) => ({ source: v.source, form: v.form, reason: v.ok ? null : v.reason })),
      hint: `sign the manifest ${digest ?? ''} with one of the keys of images.trust.keys (${this.keys.map((k) => k.id).join(', ')}) and attach the signature to the image (OCI referrer, sha256-<hex>.sig tag) or pass it as "signature"`,
    });
  }
}
