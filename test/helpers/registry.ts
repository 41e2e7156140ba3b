/**
 * A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1 with a
 * storage directory of its own, in the host's network namespace or in a sandbox's (pass `sandbox`
 * or `netnsPid`: smd's daemon tests run smd inside the sandbox's netns, where 127.0.0.1 is the
 * sandbox's loopback, so the registry must listen there).
 *
 *   auth 'none'  — anonymous.
 *   auth 'basic' — htpasswd (bcrypt, made with `htpasswd -Bbn`). distribution 2.8.2 does not refuse
 *                  basic auth over plain HTTP (checked), so `tls` is independent; it defaults to
 *                  true for 'basic' and 'token', false for 'none'.
 *   auth 'token' — distribution's `auth.token` with a token endpoint of the test's own (node:http(s)
 *                  in this process, listening in the same place through fault-proxy.ts's door).
 *                  It checks basic credentials and issues ES256 JWTs whose header carries `x5c`
 *                  (the signing certificate, which is the registry's rootcertbundle); without
 *                  credentials it answers 401. distribution allows 60 s of clock skew on `exp`
 *                  (whole seconds), so a token is minted with exp = ceil(now + ttl) - 60: the
 *                  registry accepts it for at least `ttl` seconds and refuses it after
 *                  lastTokenExpiresAt() (at most ttl + 1 s after issue); `expires_in` says `ttl`.
 *                  Set a short ttl (setTokenTtl) to make a client meet a 401 and fetch a new
 *                  token; tokenRequests() counts.
 *
 * requests() is the registry's own access log (combined format on its stdout): method, path,
 * status, bytes, user. It has no Range header; to see ranges or cut a blob download, put
 * startFaultProxy in front (plain HTTP) or use an http-source.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, createPrivateKey, randomUUID, sign, X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, inNetns, netDoor, type NetPlace } from './fault-proxy.js';
import { execBounded, succeeded, type ExecResult } from './sandbox.js';
import { makeSelfSigned, makeTestCa, type TestCa } from './test-ca.js';

interface Tap {
  teardown(fn: () => unknown): void;
}

export type RegistryAuth = 'none' | 'basic' | 'token';

export interface RegistryOptions extends NetPlace {
  auth?: RegistryAuth;
  tls?: boolean;
  username?: string;
  password?: string;
  /** Reuse a CA (else one is made in the registry's directory when TLS is on). */
  ca?: TestCa;
  /** Token lifetime in seconds as the registry enforces it (default 300). */
  tokenTtlSec?: number;
  /** Work directory (default: a fresh one under the tmpdir, removed with the test). */
  dir?: string;
  startTimeoutMs?: number;
  /** Address to listen on in its place (default 127.0.0.1; a device test serves from a remote host's address). */
  address?: string;
}

export interface AccessLogEntry {
  method: string;
  path: string;
  status: number;
  bytes: number;
  user: string | null;
}

export interface TokenRequest {
  account: string | null;
  scopes: string[];
  granted: boolean;
  service: string | null;
}

export interface Registry {
  /** `127.0.0.1:PORT` — the host part of `docker://HOST/REPO:TAG`. */
  host: string;
  /** `http(s)://127.0.0.1:PORT` */
  url: string;
  tls: boolean;
  auth: RegistryAuth;
  caCert?: string;
  /** skopeo --cert-dir layout (ca.crt), when TLS is on. */
  certDir?: string;
  username?: string;
  password?: string;
  /** Token endpoint (realm), auth 'token' only. */
  tokenUrl?: string;
  service?: string;
  storageDir: string;
  netnsPid: number | undefined;
  tokenRequests(): number;
  tokenLog(): TokenRequest[];
  setTokenTtl(sec: number): void;
  /** Epoch ms from which the registry refuses the newest token issued (0: none yet). */
  lastTokenExpiresAt(): number;
  requests(): AccessLogEntry[];
  /** The registry's stderr (its application log), for failure messages. */
  output(): string;
  /** skopeo flags for this registry as `src` or `dest`, with or without the credentials. */
  skopeoFlags(side: 'src' | 'dest' | 'plain', o?: { creds?: boolean }): string[];
  /** curl flags: --cacert when TLS, -u user:pass when `creds` and auth is basic. */
  curlFlags(o?: { creds?: boolean }): string[];
  /** Run a program where the registry is reachable (its network namespace), bounded; never throws on exit code. */
  exec(cmd: string, args: readonly string[], o?: { timeoutMs?: number }): Promise<ExecResult>;
  stop(): Promise<void>;
}

const ACCESS = /^(\S+) \S+ (\S+) \[[^\]]*\] "(\S+) (\S+)[^"]*" (\d{3}) (\d+|-)/;

export function parseAccessLog(text: string): AccessLogEntry[] {
  const out: AccessLogEntry[] = [];
  for (const line of text.split('\n')) {
    const m = ACCESS.exec(line);
    if (m) out.push({ method: m[3]!, path: m[4]!, status: Number(m[5]), bytes: m[6] === '-' ? 0 : Number(m[6]), user: m[2] === '-' ? null : m[2]! });
  }
  return out;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

/** An ES256 JWT in distribution's token format, with the signing certificate in `x5c`. */
/**
 * An ES256 JWT in distribution's token format, with the signing certificate in `x5c`.
 * `expiresAt` (ms) is when the registry starts refusing it: exp is whole seconds, rounded up so
 * that the token is never shorter-lived than `ttlSec` (rounding down made a 1 s token expire at
 * once when it was minted late in a second).
 */
export function mintToken(o: { keyPem: string; certPem: string; issuer: string; service: string; subject: string; access: { type: string; name: string; actions: string[] }[]; ttlSec: number }): { token: string; expiresAt: number } {
  const der = new X509Certificate(o.certPem).raw;
  const header = { typ: 'JWT', alg: 'ES256', x5c: [der.toString('base64')] };
  const nowSec = Date.now() / 1000;
  const refusedFrom = Math.ceil(nowSec + o.ttlSec);
  const claims = { iss: o.issuer, sub: o.subject, aud: o.service, exp: refusedFrom - 60, nbf: Math.floor(nowSec), iat: Math.floor(nowSec), jti: randomUUID(), access: o.access };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const sig = sign('sha256', Buffer.from(input), { key: createPrivateKey(o.keyPem), dsaEncoding: 'ieee-p1363' });
  // distribution refuses once now is after exp + leeway, that is after refusedFrom.
  return { token: `${input}.${b64url(sig)}`, expiresAt: refusedFrom * 1000 };
}

function parseScope(s: string): { type: string; name: string; actions: string[] } | null {
  const first = s.indexOf(':');
  const last = s.lastIndexOf(':');
  if (first < 0 || last <= first) return null;
  return { type: s.slice(0, first), name: s.slice(first + 1, last), actions: s.slice(last + 1).split(',').filter(Boolean) };
}

function basicCreds(h: string | undefined): [string, string] | null {
  const m = /^Basic\s+(\S+)/i.exec(h ?? '');
  if (!m) return null;
  const s = Buffer.from(m[1]!, 'base64').toString();
  const i = s.indexOf(':');
  return i < 0 ? null : [s.slice(0, i), s.slice(i + 1)];
}

export async function startRegistry(t: Tap, opts: RegistryOptions = {}): Promise<Registry> {
  const auth = opts.auth ?? 'none';
  const tls = opts.tls ?? auth !== 'none';
  const username = opts.username ?? 'smd-test';
  const password = opts.password ?? 'correct horse battery';
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'smd-registry-'));
  if (!opts.dir) t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(dir, { recursive: true });
  const storageDir = join(dir, 'storage');
  mkdirSync(storageDir, { recursive: true });
  const place: NetPlace = opts;
  const door = netDoor(t, place);
  const ca = tls ? (opts.ca ?? (await makeTestCa(join(dir, 'ca')))) : undefined;

  const config: Record<string, unknown> = {
    version: '0.1',
    log: { level: 'info', formatter: 'text', accesslog: { disabled: false } },
    storage: { filesystem: { rootdirectory: storageDir }, delete: { enabled: true }, maintenance: { uploadpurging: { enabled: false } } },
    http: { addr: '', secret: randomUUID(), ...(ca ? { tls: { certificate: ca.serverCert, key: ca.serverKey } } : {}) },
  };

  if (auth === 'basic') {
    const line = await succeeded(execBounded('htpasswd', ['-Bbn', username, password], { timeoutMs: 10_000 }), 'htpasswd', ['-Bbn', username, '***']);
    writeFileSync(join(dir, 'htpasswd'), line.trim() + '\n');
    config.auth = { htpasswd: { realm: 'smd-test', path: join(dir, 'htpasswd') } };
  }

  // The token endpoint.
  const tokenLog: TokenRequest[] = [];
  let ttl = opts.tokenTtlSec ?? 300;
  let lastExpiry = 0;
  const service = 'smd-test-registry';
  const issuer = 'smd-test-token-issuer';
  let tokenUrl: string | undefined;
  let tokenStop: (() => Promise<void>) | undefined;
  if (auth === 'token') {
    const signer = await makeSelfSigned(join(dir, 'token'), 'signer', 'smd test token signer');
    const keyPem = readFileSync(signer.key, 'utf8');
    const certPem = readFileSync(signer.cert, 'utf8');
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
      const u = new URL(req.url ?? '/', 'http://x');
      if (u.pathname !== '/token') {
        res.writeHead(404).end();
        return;
      }
      const creds = basicCreds(req.headers.authorization);
      const scopes = u.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
      const granted = !!creds && creds[0] === username && creds[1] === password;
      tokenLog.push({ account: creds?.[0] ?? u.searchParams.get('account'), scopes, granted, service: u.searchParams.get('service') });
      if (!granted) {
        res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Basic realm="smd-test-token"' });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'bad or missing credentials' }] }));
        return;
      }
      const access = scopes.map(parseScope).filter((a): a is NonNullable<typeof a> => a !== null);
      const { token, expiresAt } = mintToken({ keyPem, certPem, issuer, service, subject: creds[0], access, ttlSec: ttl });
      lastExpiry = expiresAt;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ token, access_token: token, expires_in: ttl, issued_at: new Date().toISOString() }));
    };
    const server = ca ? https.createServer({ cert: readFileSync(ca.serverCert), key: readFileSync(ca.serverKey) }, handler) : http.createServer(handler);
    const listener = await door.listen('127.0.0.1', 0);
    const sockets = new Set<net.Socket>();
    listener.on('connection', (s: net.Socket) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      server.emit('connection', s);
    });
    tokenUrl = `${ca ? 'https' : 'http'}://127.0.0.1:${(listener.address() as net.AddressInfo).port}/token`;
    tokenStop = () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((res) => listener.close(() => res()));
    };
    t.teardown(tokenStop);
    config.auth = { token: { realm: tokenUrl, service, issuer, rootcertbundle: signer.cert } };
  }

  // Start the registry on a port free in its place; retry if someone took it meanwhile.
  const address = opts.address ?? '127.0.0.1';
  let proc: ChildProcess | undefined;
  let stdout = '';
  let stderr = '';
  let port = 0;
  const timeoutMs = opts.startTimeoutMs ?? 15_000;
  for (let attempt = 1; ; attempt++) {
    port = await freePort(door);
    (config.http as { addr: string }).addr = `${address}:${port}`;
    const configPath = join(dir, 'config.yml'); // YAML is a superset of JSON
    writeFileSync(configPath, JSON.stringify(config, null, 2));
    stdout = '';
    stderr = '';
    const [cmd, args] = inNetns(place, 'docker-registry', ['serve', configPath]);
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    proc = p;
    p.stdout!.on('data', (d) => (stdout += d));
    const started = await new Promise<'ok' | 'inuse' | string>((res) => {
      const timer = setTimeout(() => res(`no "listening on" within ${timeoutMs} ms`), timeoutMs);
      p.stderr!.on('data', (d) => {
        stderr += d;
        if (stderr.includes(`listening on ${address}:${port}`)) clearTimeout(timer), res('ok');
      });
      p.once('exit', (code) => (clearTimeout(timer), res(/address already in use/.test(stderr) ? 'inuse' : `exited ${code}`)));
    });
    if (started === 'ok') break;
    p.kill('SIGKILL');
    if (started !== 'inuse' || attempt >= 3) throw new Error(`docker-registry did not start: ${started}\n${stderr.slice(-4000)}`);
  }
  const registryProc = proc;
  const exited = new Promise<void>((res) => {
    if (registryProc.exitCode !== null || registryProc.signalCode !== null) res();
    else registryProc.once('exit', () => res());
  });

  const host = `${address}:${port}`;
  let stopped: Promise<void> | null = null;
  const reg: Registry = {
    host,
    url: `${tls ? 'https' : 'http'}://${host}`,
    tls,
    auth,
    ...(ca ? { caCert: ca.caCert, certDir: ca.certDir } : {}),
    ...(auth !== 'none' ? { username, password } : {}),
    ...(tokenUrl ? { tokenUrl, service } : {}),
    storageDir,
    netnsPid: door.netnsPid,
    tokenRequests: () => tokenLog.length,
    tokenLog: () => tokenLog.map((r) => ({ ...r, scopes: [...r.scopes] })),
    setTokenTtl: (sec) => void (ttl = sec),
    lastTokenExpiresAt: () => lastExpiry,
    requests: () => parseAccessLog(stdout),
    output: () => stderr,
    skopeoFlags(side, o = {}) {
      const pre = side === 'plain' ? '--' : `--${side}-`;
      const creds = o.creds ?? true;
      return [
        ...(ca ? [`${pre}cert-dir`, ca.certDir] : [`${pre}tls-verify=false`]),
        ...(auth === 'none' ? [] : creds ? [`${pre}creds`, `${username}:${password}`] : [`${pre}no-creds`]),
      ];
    },
    curlFlags(o = {}) {
      return [...(ca ? ['--cacert', ca.caCert] : []), ...(auth === 'basic' && o.creds ? ['-u', `${username}:${password}`] : [])];
    },
    exec(cmd, args, o = {}) {
      const [c, a] = inNetns(place, cmd, args);
      return execBounded(c, a, { timeoutMs: o.timeoutMs ?? 20_000 });
    },
    stop() {
      stopped ??= (async () => {
        if (registryProc.exitCode === null && registryProc.signalCode === null) {
          registryProc.kill('SIGTERM');
          const hard = setTimeout(() => registryProc.kill('SIGKILL'), 5000);
          await exited;
          clearTimeout(hard);
        }
        await tokenStop?.();
      })();
      return stopped;
    },
  };
  t.teardown(() => reg.stop());
  return reg;
}

/**
 * skopeo, run where the registry is reachable, with a private, empty blob-info cache (a tmpfs over
 * /var/lib/containers/cache in a mount namespace of its own): as root skopeo otherwise keeps one
 * cache for the whole host, and what another test pushed could change which blobs it sends.
 */
export function skopeo(reg: Pick<Registry, 'exec'>, args: readonly string[], o: { timeoutMs?: number } = {}): Promise<ExecResult> {
  const cache = '/var/lib/containers/cache';
  if (!existsSync(cache)) mkdirSync(cache, { recursive: true, mode: 0o700 });
  return reg.exec('unshare', ['-m', '--propagation', 'private', '--', 'sh', '-c', `mount -t tmpfs tmpfs ${cache} && exec skopeo --insecure-policy "$@"`, 'skopeo', ...args], o);
}

export interface PushOptions {
  /** Manifest format in the registry (default: the source's, i.e. OCI for our archives). */
  format?: 'oci' | 'v2s2';
  /**
   * Layer compression in the registry (default gzip). zstd needs the OCI format. skopeo 1.9 reuses
   * layers already in the same repository in another compression (checked: a zstd push after a
   * gzip push of the same image to the same repo stores gzip layers), so push each compression
   * to a repository of its own.
   */
  compress?: 'gzip' | 'zstd';
  /** Copy every manifest of an index (multi-platform), `skopeo copy --all`. */
  all?: boolean;
  timeoutMs?: number;
}

/**
 * Pushes an OCI archive (e.g. from buildExampleImages) to `repo:tag` with skopeo and returns the
 * digest of the manifest (or index, with `all`) as stored: `sha256:...`.
 */
export async function pushImage(reg: Registry, srcOciArchive: string, repoTag: string, o: PushOptions = {}): Promise<string> {
  const work = mkdtempSync(join(tmpdir(), 'smd-push-'));
  try {
    const digestFile = join(work, 'digest');
    const args = [
      'copy', '--quiet', '--digestfile', digestFile,
      ...(o.format ? ['--format', o.format] : []),
      ...(o.compress ? ['--dest-compress-format', o.compress] : []),
      ...(o.all ? ['--all'] : []),
      ...reg.skopeoFlags('dest'),
      `oci-archive:${srcOciArchive}`, `docker://${reg.host}/${repoTag}`,
    ];
    const r = await skopeo(reg, args, { timeoutMs: o.timeoutMs ?? 60_000 });
    if (r.code !== 0) throw new Error(`skopeo copy to ${reg.host}/${repoTag} exited ${r.code}: ${r.stderr.trim()}`);
    const digest = readFileSync(digestFile, 'utf8').trim();
    if (!/^sha256:[0-9a-f]{64}$/.test(digest)) throw new Error(`skopeo wrote a strange digest: ${JSON.stringify(digest)}`);
    return digest;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** sha256:<hex> of a buffer (e.g. a raw manifest from `skopeo inspect --raw`). */
export function digestOf(b: Buffer | string): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}
