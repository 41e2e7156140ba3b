// A raw NDJSON connection to smd that keeps books: which replies it is owed (from the oracle in
// fuzz.mjs), which it received, notifications, error codes, and whether and why the server
// closed it.
import { createConnection } from 'node:net';
import { expectedReplies, idKey } from './fuzz.mjs';

const tick = () => new Promise((r) => setImmediate(r));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class AccountedConnection {
  /** `limits` are smd's rpc limits ({maxBatch, maxRequestBytes}); `reading: false` never reads. */
  constructor(path, name, { limits = {}, reading = true } = {}) {
    this.name = name;
    this.limits = limits;
    this.expected = new Map();
    this.received = new Map();
    this.messages = 0;
    this.bytesSent = 0;
    this.requestsOwed = 0;
    this.replies = 0;
    this.notifications = 0;
    this.malformedReplies = [];
    this.codes = new Map();
    this.internal = new Map();
    this.oversizeAnswered = false;
    this.overflowSent = false;
    this.closedByUs = false;
    this.closedByServer = false;
    this.closeReason = null;
    this.lastProgressAt = Date.now();
    this.reading = reading;
    this.parts = [];
    this.socket = createConnection(path);
    this.socket.on('error', (err) => (this.error ??= err.code ?? err.message));
    this.connected = new Promise((resolve, reject) => {
      this.socket.once('connect', resolve);
      this.socket.once('error', reject);
    });
    this.closed = new Promise((resolve) =>
      this.socket.once('close', () => {
        if (!this.closedByUs) {
          this.closedByServer = true;
          this.closeReason = this.oversizeAnswered ? 'oversized message (-32600, then closed)' : !this.reading ? 'client not reading its replies (output queue limit)' : `reset by server (${this.error ?? 'no error'})`;
        }
        resolve();
      }),
    );
    this.socket.on('data', (chunk) => this.onData(chunk));
    if (!reading) this.socket.pause();
  }

  onData(chunk) {
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, nl);
      const line = this.parts.length ? Buffer.concat([...this.parts, piece]) : piece;
      this.parts = [];
      start = nl + 1;
      this.onLine(line.toString('utf8'));
    }
    if (start < chunk.length) this.parts.push(chunk.subarray(start));
  }

  onLine(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      this.malformedReplies.push(text.slice(0, 200));
      return;
    }
    for (const r of Array.isArray(msg) ? msg : [msg]) {
      if (r && typeof r === 'object' && typeof r.method === 'string' && !('id' in r)) {
        this.notifications++;
        continue;
      }
      if (!r || typeof r !== 'object' || r.jsonrpc !== '2.0' || !('id' in r) || ('result' in r) === ('error' in r)) {
        this.malformedReplies.push(JSON.stringify(r).slice(0, 200));
        continue;
      }
      this.replies++;
      this.lastProgressAt = Date.now();
      const key = idKey(r.id);
      this.received.set(key, (this.received.get(key) ?? 0) + 1);
      const code = r.error ? (r.error.data?.code ? `${r.error.code}/${r.error.data.code}` : String(r.error.code)) : 'ok';
      this.codes.set(code, (this.codes.get(code) ?? 0) + 1);
      if (r.error?.data?.code === 'INTERNAL') this.internal.set(r.error.message.slice(0, 160), (this.internal.get(r.error.message.slice(0, 160)) ?? 0) + 1);
      if (r.error?.code === -32600 && /exceeds \d+ bytes/.test(r.error.message)) this.oversizeAnswered = true;
    }
  }

  get isOpen() {
    return !this.socket.destroyed && !this.closedByServer;
  }

  /** Records what `bytes` owes (oracle), then writes it, in `chunks` pieces (partial lines) if > 1. */
  async send(bytes, { chunks = 1, rnd = Math.random, counted = 1 } = {}) {
    if (!this.isOpen || this.overflowSent) return false;
    const { keys, overflow } = expectedReplies(bytes, this.limits);
    for (const k of keys) this.expected.set(k, (this.expected.get(k) ?? 0) + 1);
    this.requestsOwed += keys.length;
    this.messages += counted;
    this.bytesSent += bytes.length;
    if (overflow) this.overflowSent = true;
    const cuts = chunks > 1 ? [...new Set(Array.from({ length: chunks - 1 }, () => 1 + Math.floor(rnd() * (bytes.length - 1))))].sort((a, b) => a - b) : [];
    let from = 0;
    for (const to of [...cuts, bytes.length]) {
      if (to <= from) continue;
      if (!this.isOpen) return false;
      if (!this.socket.write(bytes.subarray(from, to))) await Promise.race([new Promise((r) => this.socket.once('drain', r)), this.closed]);
      if (cuts.length) await tick();
      from = to;
    }
    return true;
  }

  /** Writes bytes without owing anything for them (an unterminated fragment before a hang-up). */
  sendFragment(bytes) {
    if (this.isOpen) this.socket.write(bytes);
    this.bytesSent += bytes.length;
  }

  /** Requests owed a reply that has not come (so far). */
  unanswered() {
    let n = 0;
    for (const [k, e] of this.expected) n += Math.max(0, e - (this.received.get(k) ?? 0));
    return n;
  }

  /** Up to `n` ids (as keys) still owed, with how many replies each misses. */
  missing(n = 10) {
    const out = {};
    for (const [k, e] of this.expected) {
      const miss = e - (this.received.get(k) ?? 0);
      if (miss > 0 && Object.keys(out).length < n) out[k.slice(0, 80)] = miss;
    }
    return out;
  }

  /** Replies nobody asked for (more replies for an id than requests). */
  unexpected() {
    let n = 0;
    for (const [k, r] of this.received) n += Math.max(0, r - (this.expected.get(k) ?? 0));
    return n;
  }

  /** Waits until every owed reply came, the server closed, or nothing arrived for `quietMs`. */
  async settle({ quietMs = 10_000, timeoutMs = 120_000 } = {}) {
    const deadline = Date.now() + timeoutMs;
    this.lastProgressAt = Date.now();
    while (this.unanswered() > 0 && !this.closedByServer && !this.socket.destroyed) {
      if (Date.now() > deadline || Date.now() - this.lastProgressAt > quietMs) break;
      await sleep(20);
    }
  }

  resume() {
    this.reading = true;
    this.socket.resume();
  }

  close() {
    this.closedByUs = !this.closedByServer;
    this.socket.destroy();
    return this.closed;
  }

  summary() {
    return {
      name: this.name,
      messages: this.messages,
      requestsOwed: this.requestsOwed,
      replies: this.replies,
      unanswered: this.unanswered(),
      ...(this.unanswered() > 0 ? { missing: this.missing() } : {}),
      unexpected: this.unexpected(),
      notifications: this.notifications,
      closedByServer: this.closedByServer ? this.closeReason : null,
    };
  }
}
