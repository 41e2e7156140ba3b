/**
 * downloadBlob against a real HTTP server of the test's own that misbehaves on purpose: ignores
 * Range, answers 503, sends too much, closes early; and a partial file left by an earlier process.
 */
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { downloadBlob, type DownloadPolicy } from '../../src/images/net/download.js';
import { Http } from '../../src/images/net/http.js';
import { tempDir } from '../helpers/daemon.js';

const data = randomBytes(300_000);
const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
type Handler = (req: http.IncomingMessage, res: http.ServerResponse, n: number) => void;
let handler: Handler = () => {};
const seen: { range: string | undefined }[] = [];
const server = http.createServer((req, res) => {
  seen.push({ range: req.headers.range });
  handler(req, res, seen.length);
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
t.teardown(() => new Promise<void>((r) => server.close(() => r())));
const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
const client = new Http({ hosts: { [host]: { insecure: true } }, stallTimeoutMs: 2000 });
t.teardown(() => client.close());
const policy: DownloadPolicy = { retries: 3, backoff: { initialMs: 10, maxMs: 50 }, maxBytes: 10 << 20, rate: null };

/** Serves `data` honouring Range from byte N. */
function serveRange(req: http.IncomingMessage, res: http.ServerResponse): void {
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  const from = m ? Number(m[1]) : 0;
  if (m) res.writeHead(206, { 'content-range': `bytes ${from}-${data.length - 1}/${data.length}`, 'content-length': data.length - from });
  else res.writeHead(200, { 'content-length': data.length });
  res.end(data.subarray(from));
}

async function fetchTo(path: string, size: number | null = data.length, expect = digest) {
  seen.length = 0;
  let bytes = 0;
  const fetched = await downloadBlob(
    { digest: expect, size, path, what: 'test blob', get: (range, signal) => client.request(new URL(`http://${host}/blob`), { headers: range > 0 ? { range: `bytes=${range}-` } : {}, signal }) },
    policy,
    (n) => (bytes += n),
    new AbortController().signal,
  );
  return { fetched, bytes };
}

t.test('a cut resumes with Range; a server that then ignores Range is restarted from zero', async (t) => {
  const dir = tempDir(t);
  handler = (req, res, n) => {
    if (n === 1) {
      res.writeHead(200, { 'content-length': data.length });
      res.write(data.subarray(0, 100_000), () => res.socket?.destroy());
      return;
    }
    res.writeHead(200, { 'content-length': data.length }); // Range ignored
    res.end(data);
  };
  const r = await fetchTo(join(dir, 'b'));
  t.same(readFileSync(join(dir, 'b')), data);
  t.match(seen[1]!.range, /^bytes=\d+-$/, 'the second request asked for the rest');
  t.equal(r.bytes, data.length, 'progress went back when the server started over');
  t.notOk(existsSync(join(dir, 'b.partial')));
});

t.test('503s back off and retry; a 404 is NOT_FOUND at once', async (t) => {
  const dir = tempDir(t);
  handler = (req, res, n) => (n <= 2 ? (res.writeHead(503), res.end()) : serveRange(req, res));
  await fetchTo(join(dir, 'b'));
  t.equal(seen.length, 3);
  handler = (_req, res) => (res.writeHead(404), res.end());
  await t.rejects(fetchTo(join(dir, 'c')), { code: 'NOT_FOUND' });
  t.equal(seen.length, 1, 'not retried');
});

t.test('without progress it gives up after the retries: UNAVAILABLE, the partial kept', async (t) => {
  const dir = tempDir(t);
  handler = (req, res, n) => {
    if (n === 1) {
      res.writeHead(200, { 'content-length': data.length });
      res.write(data.subarray(0, 50_000), () => res.socket?.destroy());
    } else res.socket?.destroy();
  };
  await t.rejects(fetchTo(join(dir, 'b')), { code: 'UNAVAILABLE', message: /gave up after 3 attempts/ });
  t.equal(seen.length, 1 + 3, 'one attempt with progress, then three without');
  t.equal(readFileSync(join(dir, 'b.partial')).length, 50_000, 'what arrived is kept for the next try');
});

t.test('a partial left by an earlier process is hashed again and resumed', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'b.partial'), data.subarray(0, 123_456));
  handler = serveRange;
  const r = await fetchTo(join(dir, 'b'));
  t.equal(seen[0]!.range, 'bytes=123456-');
  t.equal(r.fetched, data.length - 123_456, 'only the rest went over the network');
  t.same(readFileSync(join(dir, 'b')), data);
});

t.test('too many bytes, or the wrong ones, are INVALID_IMAGE and dropped', async (t) => {
  const dir = tempDir(t);
  handler = (_req, res) => (res.writeHead(200), res.end(Buffer.concat([data, Buffer.from('more')])));
  await t.rejects(fetchTo(join(dir, 'b')), { code: 'INVALID_IMAGE', message: /more than the 300000 bytes/ });
  t.notOk(existsSync(join(dir, 'b.partial')));
  handler = serveRange;
  await t.rejects(fetchTo(join(dir, 'c'), null, `sha256:${'0'.repeat(64)}`), { code: 'INVALID_IMAGE', message: /digest mismatch/ });
  t.notOk(existsSync(join(dir, 'c.partial')));
  t.notOk(existsSync(join(dir, 'c')));
});

t.test('an unknown size: a 416 on resume means the server has nothing more; the digest decides', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'b.partial'), data);
  handler = (_req, res) => (res.writeHead(416), res.end());
  await fetchTo(join(dir, 'b'), null);
  t.same(readFileSync(join(dir, 'b')), data);
});
