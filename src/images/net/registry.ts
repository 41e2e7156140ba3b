/**
 * An OCI registry (distribution spec v2: Docker Hub, GHCR, Harbor, Zot, `registry:2`):
 * references, authentication and the documents (index → manifest → config) of one image.
 *
 * Auth follows the registry's own `WWW-Authenticate` challenge: anonymous first; `Basic` →
 * the configured credentials; `Bearer realm=,service=,scope=` → a token from the realm (with
 * the credentials when configured), kept per repository and fetched again on the next 401
 * (tokens expire, often in minutes, in the middle of a long pull).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { SmError } from '../../errors.js';
import { discard, header, readCapped, type Http, type Response } from './http.js';

export interface ImageReference {
  /** `HOST[:PORT]` as written. */
  host: string;
  repository: string;
  /** A tag or a `sha256:<hex>` digest. */
  reference: string;
  /** Set when the reference is a digest: the manifest must hash to it. */
  digest: string | null;
}

const REPO = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;

/** Parses `docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX]` (the tag defaults to `latest`). */
export function parseReference(image: string): ImageReference {
  const bad = (why: string) => new SmError('INVALID_IMAGE', `invalid registry reference ${JSON.stringify(image)}: ${why}`, { image });
  if (!image.startsWith('docker://')) throw bad('expected docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX]');
  const rest = image.slice('docker://'.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) throw bad('no registry host');
  const host = rest.slice(0, slash);
  if (!/^[A-Za-z0-9.-]+(:\d{1,5})?$/.test(host)) throw bad(`bad host "${host}"`);
  let path = rest.slice(slash + 1);
  let reference = 'latest';
  let digest: string | null = null;
  const at = path.indexOf('@');
  if (at !== -1) {
    digest = path.slice(at + 1);
    if (!DIGEST.test(digest)) throw bad('the digest must be sha256:<64 hex digits>');
    reference = digest;
    path = path.slice(0, at);
  } else {
    const colon = path.lastIndexOf(':');
    if (colon !== -1) {
      reference = path.slice(colon + 1);
      path = path.slice(0, colon);
      if (!TAG.test(reference)) throw bad(`bad tag "${reference}"`);
    }
  }
  if (!REPO.test(path)) throw bad(`bad repository "${path}"`);
  return { host, repository: path, reference, digest };
}

export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

interface Challenge {
  scheme: 'basic' | 'bearer';
  params: Record<string, string>;
}

/** Parses one `WWW-Authenticate` header (`Bearer realm="...",service="...",scope="..."`). */
export function parseChallenge(value: string | undefined): Challenge | null {
  if (!value) return null;
  const m = /^\s*(Basic|Bearer)\b\s*(.*)$/i.exec(value);
  if (!m) return null;
  const params: Record<string, string> = {};
  for (const p of m[2]!.matchAll(/([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g)) params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3]!;
  return { scheme: m[1]!.toLowerCase() as Challenge['scheme'], params };
}

/**
 * One repository of one registry, with its credentials. Its authorization (a token) is kept in
 * `authCache` by repository, so the next pull from it starts with the token it had: it is sent
 * until the registry refuses it, then fetched again.
 */
export class RegistryClient {
  private readonly base: URL;
  private readonly cacheKey: string;

  constructor(
    private readonly http: Http,
    readonly ref: ImageReference,
    private readonly authCache: Map<string, string> = new Map(),
  ) {
    this.cacheKey = `${ref.host}/${ref.repository}`;
    const cfg = http.hostConfig(new URL(`https://${ref.host}`));
    this.base = new URL(`${cfg.insecure ? 'http' : 'https'}://${ref.host}/v2/${ref.repository}/`);
  }

  /** A manifest or index by tag or digest: bytes verified against `digest` when given, capped. */
  async manifest(reference: string, maxBytes: number): Promise<{ bytes: Buffer; mediaType: string; digest: string }> {
    const r = await this.get(new URL(`manifests/${reference}`, this.base), { accept: MANIFEST_ACCEPT });
    if (r.status !== 200) {
      await discard(r.body);
      throw this.statusError(r.status, `manifest ${reference}`);
    }
    const bytes = await readCapped(r.body, maxBytes, `manifest ${reference} of ${this.name}`);
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (DIGEST.test(reference) && digest !== reference) {
      throw new SmError('INVALID_IMAGE', `manifest ${reference} of ${this.name}: the bytes received hash to ${digest}`, { digest: reference, actual: digest });
    }
    const mediaType = (header(r.headers, 'content-type') ?? '').split(';')[0]!.trim();
    return { bytes, mediaType, digest };
  }

  /** A manifest or index by tag or digest, or null when the registry has none (404). */
  async manifestIfPresent(reference: string, maxBytes: number): Promise<{ bytes: Buffer; mediaType: string; digest: string } | null> {
    try {
      return await this.manifest(reference, maxBytes);
    } catch (err) {
      if (err instanceof SmError && err.code === 'NOT_FOUND') return null;
      throw err;
    }
  }

  /**
   * OCI 1.1 referrers of a manifest (`GET /v2/<repo>/referrers/<digest>`): the index's bytes, or
   * null when the registry has no referrers API (404, or 400/405/501 from registries that predate it:
   * the caller then reads the referrers tag `sha256-<hex>`).
   */
  async referrers(digest: string, maxBytes: number): Promise<Buffer | null> {
    const r = await this.get(new URL(`referrers/${digest}`, this.base), { accept: 'application/vnd.oci.image.index.v1+json' });
    if ([400, 404, 405, 501].includes(r.status)) {
      await discard(r.body);
      return null;
    }
    if (r.status !== 200) {
      await discard(r.body);
      throw this.statusError(r.status, `referrers of ${digest}`);
    }
    return readCapped(r.body, maxBytes, `referrers of ${digest} in ${this.name}`);
  }

  /** GET of a blob from byte `range` on (auth and redirects handled). */
  blob(digest: string, range: number, signal?: AbortSignal): Promise<Response> {
    return this.get(new URL(`blobs/${digest}`, this.base), { ...(range > 0 ? { range: `bytes=${range}-` } : {}) }, signal, true);
  }

  private get authorization(): string | null {
    return this.authCache.get(this.cacheKey) ?? null;
  }

  private set authorization(value: string) {
    this.authCache.set(this.cacheKey, value);
  }

  get name(): string {
    return `${this.ref.host}/${this.ref.repository}`;
  }

  statusError(status: number, what: string): SmError {
    if (status === 404) return new SmError('NOT_FOUND', `${what} not found in ${this.name} (HTTP 404)`, { image: this.name, status });
    if (status === 401 || status === 403) return new SmError('FORBIDDEN', `${this.name} refused access to ${what} (HTTP ${status}); check "registries.${this.ref.host}"`, { image: this.name, status });
    return new SmError('UNAVAILABLE', `${this.name}: ${what}: HTTP ${status}`, { image: this.name, status });
  }

  /**
   * A GET with the current authorization; a 401 answers the challenge once and retries. A
   * redirect (blob storage elsewhere) is followed without our credentials when it leaves the host.
   */
  private async get(url: URL, headers: Record<string, string>, signal?: AbortSignal, bulk = false): Promise<Response> {
    const send = (u: URL, auth: boolean) =>
      this.http.request(u, { headers: { ...headers, ...(auth && this.authorization ? { authorization: this.authorization } : {}) }, bulk, ...(signal ? { signal } : {}) });
    let r = await send(url, true);
    if (r.status === 401) {
      const challenge = parseChallenge(header(r.headers, 'www-authenticate'));
      await discard(r.body);
      await this.authenticate(challenge);
      r = await send(url, true);
    }
    for (let hops = 0; [301, 302, 303, 307, 308].includes(r.status); hops++) {
      const location = header(r.headers, 'location');
      await discard(r.body);
      if (!location || hops >= 5) throw new SmError('UNAVAILABLE', `${this.name}: redirect without a location, or too many`, { image: this.name });
      const next = new URL(location, url);
      r = await send(next, next.host === this.base.host);
      url = next;
    }
    return r;
  }

  private async authenticate(challenge: Challenge | null): Promise<void> {
    const basic = this.basicCredentials();
    if (!challenge) throw new SmError('FORBIDDEN', `${this.name} answered 401 without a usable WWW-Authenticate challenge`, { image: this.name });
    if (challenge.scheme === 'basic') {
      if (!basic) throw new SmError('FORBIDDEN', `${this.name} needs credentials: set "registries.${this.ref.host}.username" and "passwordFile"`, { image: this.name });
      this.authorization = `Basic ${basic}`;
      return;
    }
    const realm = challenge.params.realm;
    if (!realm) throw new SmError('FORBIDDEN', `${this.name}: the Bearer challenge names no realm`, { image: this.name });
    const url = new URL(realm);
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    url.searchParams.set('scope', challenge.params.scope ?? `repository:${this.ref.repository}:pull`);
    const r = await this.http.request(url, { headers: basic ? { authorization: `Basic ${basic}` } : {}, trustOf: this.ref.host });
    if (r.status !== 200) {
      await discard(r.body);
      throw new SmError('FORBIDDEN', `${this.name}: the token service ${url.host} refused (HTTP ${r.status}); check "registries.${this.ref.host}"`, { image: this.name, status: r.status });
    }
    let token: unknown;
    try {
      const body = JSON.parse((await readCapped(r.body, 1 << 20, 'token response')).toString('utf8')) as { token?: unknown; access_token?: unknown };
      token = body.token ?? body.access_token;
    } catch (err) {
      if (err instanceof SmError) throw err;
      throw new SmError('UNAVAILABLE', `${this.name}: the token service answered no JSON`, { image: this.name });
    }
    if (typeof token !== 'string' || token === '') throw new SmError('UNAVAILABLE', `${this.name}: the token service answered no token`, { image: this.name });
    this.authorization = `Bearer ${token}`;
  }

  private basicCredentials(): string | null {
    const cfg = this.http.hostConfig(this.base);
    if (!cfg.username) return null;
    let password = '';
    if (cfg.passwordFile) {
      try {
        password = readFileSync(cfg.passwordFile, 'utf8').replace(/\r?\n$/, '');
      } catch (err) {
        throw new SmError('INTERNAL', `registries.${this.ref.host}.passwordFile: cannot read ${cfg.passwordFile}: ${(err as Error).message}`, { host: this.ref.host });
      }
    }
    return Buffer.from(`${cfg.username}:${password}`).toString('base64');
  }
}
