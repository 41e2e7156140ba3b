/**
 * HTTP for image downloads: one undici Agent per host, with that host's CA and timeouts.
 *
 * undici (the client behind Node's fetch, kept by the Node.js project) is used directly rather
 * than `fetch`, for a per-host CA (fetch takes no TLS options), the body timeout that is our
 * stall timeout (no byte for that long ends the transfer, and we resume it), and a body that is a
 * plain Readable with backpressure.
 */
import { readFileSync } from 'node:fs';
import type { Agent, Dispatcher } from 'undici';

type Undici = typeof import('undici');
/** Link errors undici reports by code (its error classes live in the lazily loaded module). */
const STALL_CODES = new Set(['UND_ERR_BODY_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);
import { SmError } from '../../errors.js';

export interface RegistryConfig {
  username?: string | undefined;
  passwordFile?: string | undefined;
  ca?: string | undefined;
  insecure?: boolean | undefined;
}

export interface HttpOptions {
  /** Per `HOST[:PORT]`: credentials, a custom CA, plain http allowed. */
  hosts: Record<string, RegistryConfig>;
  /** No byte (headers or body) for this long ends a request; downloads resume after it. */
  stallTimeoutMs: number;
}

export interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
}

/** A failure of the link (reset, refused, stalled, TLS): worth another attempt. */
export class TransientError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TransientError';
  }
}

export class Http {
  private readonly agents = new Map<string, Agent>();
  /**
   * undici (~110 modules) is loaded on the first request, not at start: most starts fetch
   * nothing, and loading it cost a measured share of start-to-READY (scripts/bench/rpc.mjs).
   */
  private undici: Promise<Undici> | null = null;

  constructor(private readonly opts: HttpOptions) {}

  /** The configuration of the host of `url` (`HOST[:PORT]` as written in the URL). */
  hostConfig(url: URL): RegistryConfig {
    return this.opts.hosts[url.host] ?? {};
  }

  /** Plain http is refused unless the host is listed as insecure (SPEC 11). */
  checkScheme(url: URL): void {
    if (url.protocol === 'https:') return;
    if (url.protocol === 'http:' && this.hostConfig(url).insecure) return;
    throw new SmError('INVALID_IMAGE', `${url.protocol}//${url.host} is not allowed: only https, or http for hosts listed with "insecure": true under "registries"`, { host: url.host });
  }

  /**
   * One request; link failures become TransientError, the caller decides about status codes.
   * `trustOf` names the configured host whose CA applies (a registry's token service is trusted
   * with the registry's CA).
   */
  async request(url: URL, init: { method?: 'GET' | 'HEAD'; headers?: Record<string, string>; signal?: AbortSignal; trustOf?: string; bulk?: boolean } = {}): Promise<Response> {
    this.checkScheme(url);
    // A CommonJS package: bundled, its exports may sit under `default`.
    const undici = await (this.undici ??= import('undici').then((m) => ((m as unknown as { default?: Undici }).default ?? m)));
    try {
      const r = await undici.request(url, {
        method: init.method ?? 'GET',
        headers: init.headers ?? {},
        dispatcher: this.agent(undici, url, init.trustOf ?? url.host),
        // A blob's body is read in 1 MiB pieces rather than undici's default 64 KiB (fewer, bigger writes).
        ...(init.bulk ? { highWaterMark: 1 << 20 } : {}),
        ...(init.signal ? { signal: init.signal } : {}),
      });
      return { status: r.statusCode, headers: r.headers, body: r.body };
    } catch (err) {
      throw classify(err, url.host);
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.agents.values()].map((a) => a.close()));
    this.agents.clear();
  }

  private agent(undici: Undici, url: URL, trustOf: string): Agent {
    const key = `${url.host} ${trustOf}`;
    let a = this.agents.get(key);
    if (!a) {
      const cfg = this.opts.hosts[trustOf] ?? {};
      let ca: string | undefined;
      if (cfg.ca) {
        try {
          ca = readFileSync(cfg.ca, 'utf8');
        } catch (err) {
          throw new SmError('INTERNAL', `registries.${trustOf}.ca: cannot read ${cfg.ca}: ${(err as Error).message}`, { host: trustOf });
        }
      }
      a = new undici.Agent({
        headersTimeout: this.opts.stallTimeoutMs,
        bodyTimeout: this.opts.stallTimeoutMs,
        connectTimeout: this.opts.stallTimeoutMs,
        connections: 8,
        ...(ca ? { connect: { ca } } : {}),
      });
      this.agents.set(key, a);
    }
    return a;
  }
}

/**
 * What went wrong on the link (a request, or reading its body), as an error the download loop
 * understands; `host` names the server in messages.
 */
export function classify(err: unknown, host: string): Error {
  if (err instanceof SmError || err instanceof TransientError) return err;
  const e = err as Error & { code?: string };
  if (e?.name === 'AbortError' || e?.code === 'UND_ERR_ABORTED') return new SmError('UNAVAILABLE', `download from ${host} was cancelled`, { host: host }, { cause: err });
  if (typeof e?.code === 'string' && STALL_CODES.has(e.code)) {
    return new TransientError(`${host}: no data for the stall timeout`, { cause: err });
  }
  if (typeof e?.code === 'string' && /^(ERR_TLS|CERT_|UNABLE_TO_|DEPTH_ZERO|SELF_SIGNED|ERR_SSL)/.test(e.code)) {
    // A certificate that does not verify will not verify on the next attempt either.
    return new SmError('UNAVAILABLE', `TLS with ${host} failed: ${e.message} (is "registries.${host}.ca" set?)`, { host: host, errno: e.code }, { cause: err });
  }
  return new TransientError(`${host}: ${e?.message ?? String(err)}`, { cause: err });
}

export function header(h: Response['headers'], name: string): string | undefined {
  const v = h[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Hands each chunk of a body to `each` as undici pushed it, waiting for a promise `each`
 * returns before the next. A Readable's async iterator would instead concatenate whatever is
 * buffered into a new Buffer on every read: for a blob, a fresh allocation and a copy of every
 * byte (a tenth of a 50 MB pull's download time, measured).
 */
export function eachChunk(body: Response['body'], each: (chunk: Buffer) => Promise<void> | void): Promise<void> {
  return new Promise((resolve, reject) => {
    let busy = false;
    let ended = false;
    let settled = false;
    const settle = (err?: unknown) => {
      if (settled) return;
      settled = true;
      body.off('data', onData);
      if (err === undefined) resolve();
      else {
        body.destroy();
        reject(err);
      }
    };
    const onData = (chunk: Buffer) => {
      let r: Promise<void> | void;
      try {
        r = each(chunk);
      } catch (err) {
        settle(err);
        return;
      }
      if (!r) return;
      busy = true;
      body.pause();
      r.then(
        () => {
          busy = false;
          if (ended) settle();
          else if (!settled) body.resume();
        },
        (err: unknown) => settle(err),
      );
    };
    body.on('data', onData);
    body.once('end', () => {
      ended = true;
      if (!busy) settle();
    });
    body.once('error', (err) => settle(err));
    body.once('close', () => {
      if (!ended) settle(new Error('the response body closed before its end'));
    });
  });
}

/** Reads a (small, capped) body whole; more than `max` bytes is INVALID_IMAGE. */
export async function readCapped(body: Response['body'], max: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > max) {
      body.destroy();
      throw new SmError('INVALID_IMAGE', `${what} is over the ${max}-byte cap`, { limit: max });
    }
    parts.push(chunk);
  }
  return Buffer.concat(parts);
}

/** Drains and discards a body we do not need (so the connection can be reused). */
export async function discard(body: Response['body']): Promise<void> {
  try {
    await body.dump();
  } catch {
    /* the connection is dropped instead: nothing to recover */
  }
}
