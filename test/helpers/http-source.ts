/**
 * A static file server (node:http, or node:https with the test CA's server certificate) for
 * image sources fetched over `https://` / `http://`: GET and HEAD, `Range: bytes=N-`, `bytes=N-M`
 * and `bytes=-N` (206 with Content-Range; 416 when unsatisfiable), ETag and Last-Modified, and
 * If-Range. Every request is recorded (method, path, range header, status, body bytes handed to the
 * socket), so a test can assert "the server saw a Range request" or "the bytes served stayed
 * within the blob size plus one chunk". Listens on 127.0.0.1 in the place's network namespace
 * (see NetPlace in fault-proxy.ts).
 */
import { createReadStream, readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import { netDoor, type NetPlace } from './fault-proxy.js';

interface Tap {
  teardown(fn: () => unknown): void;
}

export interface SourceRequest {
  method: string;
  path: string;
  /** The Range header as sent, if any. */
  range?: string;
  ifRange?: string;
  status: number;
  /** Body bytes written to the response (what the server handed to the socket; a client that aborted may have received fewer). */
  bytesSent: number;
  /** Set once the response finished or the client went away. */
  done: boolean;
  /** The source cut this response on purpose (cutNext). */
  cut?: boolean;
}

export interface HttpSource {
  host: string;
  port: number;
  /** `http(s)://127.0.0.1:PORT` */
  origin: string;
  url(path: string): string;
  requests(): SourceRequest[];
  /** Sum of bytesSent over all requests (for `path` only, if given). */
  bytesServed(path?: string): number;
  /**
   * The next `times` (default 1) GETs of `urlPath` send exactly `afterBytes` body bytes and then
   * close the connection: unlike a cut in the fault proxy, the server then wrote no more than
   * that (kernel socket buffers would otherwise hold much of the rest), so bytesServed() stays an
   * exact measure of what a resuming client cost.
   */
  cutNext(urlPath: string, afterBytes: number, times?: number): void;
  /** Replace or add a file while running. */
  setFile(urlPath: string, absFile: string): void;
  stop(): Promise<void>;
}

export interface HttpSourceOptions extends NetPlace {
  /** URL path (leading '/') → file on disk. */
  files: Record<string, string>;
  /** Serve TLS with this certificate and key (e.g. makeTestCa's serverCert/serverKey). */
  tls?: { cert: string; key: string };
  /** Chunk size of the file streams (default 64 KiB): the unit of "one chunk" in byte-count assertions. */
  chunkSize?: number;
}

function parseRange(h: string, size: number): { start: number; end: number } | 'unsatisfiable' | null {
  const m = /^bytes=(\d*)-(\d*)$/.exec(h.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null; // multi-range or garbage: ignored, full body
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || end < start) return 'unsatisfiable';
  return { start, end };
}

export async function startHttpSource(t: Tap, opts: HttpSourceOptions): Promise<HttpSource> {
  const files = new Map(Object.entries(opts.files));
  const log: SourceRequest[] = [];
  const chunk = opts.chunkSize ?? 64 * 1024;
  const cuts = new Map<string, { after: number; times: number }>();

  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const rec: SourceRequest = {
      method: req.method ?? '?',
      path,
      ...(req.headers.range ? { range: req.headers.range } : {}),
      ...(req.headers['if-range'] ? { ifRange: String(req.headers['if-range']) } : {}),
      status: 0,
      bytesSent: 0,
      done: false,
    };
    log.push(rec);
    const finish = (status: number, headers: http.OutgoingHttpHeaders, body?: string) => {
      rec.status = status;
      res.writeHead(status, headers);
      res.end(body);
      rec.done = true;
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return finish(405, { allow: 'GET, HEAD' });
    const file = files.get(path);
    let st;
    try {
      st = file ? statSync(file) : undefined;
    } catch {
      st = undefined;
    }
    if (!file || !st?.isFile()) return finish(404, { 'content-type': 'text/plain' }, 'not found\n');
    const size = st.size;
    const etag = `"${size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
    const lastModified = new Date(Math.floor(st.mtimeMs / 1000) * 1000).toUTCString();
    const base = { 'accept-ranges': 'bytes', etag, 'last-modified': lastModified, 'content-type': 'application/octet-stream' };
    let range = req.headers.range ? parseRange(req.headers.range, size) : null;
    const ifRange = req.headers['if-range'];
    if (range && ifRange && ifRange !== etag && ifRange !== lastModified) range = null; // changed: whole body
    if (range === 'unsatisfiable') return finish(416, { ...base, 'content-range': `bytes */${size}` });
    const { start, end } = range ?? { start: 0, end: size - 1 };
    const length = size === 0 ? 0 : end - start + 1;
    const status = range ? 206 : 200;
    const headers = { ...base, 'content-length': String(length), ...(range ? { 'content-range': `bytes ${start}-${end}/${size}` } : {}) };
    if (req.method === 'HEAD' || length === 0) return finish(status, headers);
    rec.status = status;
    res.writeHead(status, headers);
    const cut = cuts.get(path);
    const limit = cut && cut.times > 0 ? (cut.times--, cut.after) : Infinity;
    if (limit !== Infinity) rec.cut = true;
    const stream = createReadStream(file, { start, end, highWaterMark: chunk });
    const done = () => {
      rec.done = true;
      stream.destroy();
    };
    res.on('close', done);
    stream.on('error', () => res.destroy());
    stream.on('end', () => res.end());
    stream.on('data', (data: string | Buffer) => {
      const c = data as Buffer; // no encoding set: always a Buffer
      const room = limit - rec.bytesSent;
      if (c.length >= room) {
        // The source's own cut: exactly `limit` body bytes reach the socket, then it closes.
        const head = c.subarray(0, Math.max(0, room));
        rec.bytesSent += head.length;
        stream.destroy();
        const kill = () => res.socket?.destroy();
        if (head.length) res.write(head, kill);
        else kill();
        return;
      }
      rec.bytesSent += c.length;
      if (!res.write(c)) {
        stream.pause();
        res.once('drain', () => stream.resume());
      }
    });
  };

  const server = opts.tls
    ? https.createServer({ cert: readFileSync(opts.tls.cert), key: readFileSync(opts.tls.key) }, handler)
    : http.createServer(handler);
  server.keepAliveTimeout = 5000;
  const door = netDoor(t, opts);
  const listener = await door.listen('127.0.0.1', 0);
  const port = (listener.address() as net.AddressInfo).port;
  const sockets = new Set<net.Socket>();
  listener.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    server.emit('connection', s);
  });
  const origin = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  let stopped: Promise<void> | null = null;
  const source: HttpSource = {
    host: `127.0.0.1:${port}`,
    port,
    origin,
    url: (p) => origin + (p.startsWith('/') ? p : `/${p}`),
    requests: () => log.map((r) => ({ ...r })),
    bytesServed: (p) => log.filter((r) => p === undefined || r.path === p).reduce((n, r) => n + r.bytesSent, 0),
    setFile: (p, f) => void files.set(p, f),
    cutNext: (p, after, times = 1) => void cuts.set(p, { after, times }),
    stop() {
      stopped ??= (async () => {
        for (const s of sockets) s.destroy();
        await new Promise<void>((res) => listener.close(() => res()));
        await door.stop();
      })();
      return stopped;
    },
  };
  t.teardown(() => source.stop());
  return source;
}
