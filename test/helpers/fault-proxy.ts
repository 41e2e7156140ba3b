/**
 * TCP plumbing for the network test helpers, and a fault-injecting TCP proxy.
 *
 * Where a server lives: smd's daemon tests run smd inside the sandbox's network namespace
 * (`nsenter -t PID -m -n`, see daemon.ts), where 127.0.0.1 is the sandbox's own loopback. A server
 * for such a test must listen there. `listenTcp`/`connectTcp` give this process a listening socket
 * (or an outgoing connection) that lives in the namespace of `netnsPid`: a tiny node "broker"
 * started through `nsenter -t PID -n` creates the socket there and hands it over the IPC channel
 * (child_process handle passing); the logic (HTTP, the proxy) stays in this process. Without a
 * `netnsPid` they are plain node:net calls on the host's loopback.
 *
 * The proxy relays bytes between a client and `target` (TLS passes through end to end) and
 * applies, per connection, one fault to the server→client stream:
 *   - `cut`:   forward exactly N bytes, then destroy both sockets (FIN; `reset: true` sends RST);
 *   - `stall`: forward N bytes, then forward nothing more but keep both sockets open;
 *   - `flip`:  XOR one byte (mask 0xff unless given) at offset N;
 *   - `pass`:  relay untouched.
 * Offsets count from the first byte the server sent on that connection (`from: 'stream'`, the
 * default), or from the first byte after the end of the first response's headers (`from: 'body'`,
 * the proxy looks for CRLFCRLF; plain HTTP only). With `from: 'body'` and chunked transfer
 * encoding the offset counts the raw bytes after the headers, chunk-size lines included; with a
 * Content-Length response it is the body offset. Under TLS only `'stream'` makes sense: the
 * stream is ciphertext, so cut and stall still work (the client sees a truncated or stalled TLS
 * session), and a flip makes the client's TLS fail with a bad record MAC rather than deliver a
 * corrupted body.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import net from 'node:net';

interface Tap {
  teardown(fn: () => unknown): void;
}

/** Where a helper's sockets live: the host's network namespace, or that of `netnsPid` / `sandbox.pid`. */
export interface NetPlace {
  netnsPid?: number;
  sandbox?: { pid: number };
}

export function netnsPidOf(p: NetPlace): number | undefined {
  return p.netnsPid ?? p.sandbox?.pid;
}

/** argv prefix that runs a program in the place's network namespace (empty on the host). */
export function inNetns(p: NetPlace, cmd: string, args: readonly string[]): [string, string[]] {
  const pid = netnsPidOf(p);
  return pid === undefined ? [cmd, [...args]] : ['nsenter', ['-t', String(pid), '-n', '--', cmd, ...args]];
}

const BROKER = `
const net = require('node:net');
process.on('message', (m) => {
  const fail = (e) => process.send({ id: m.id, error: String(e && e.message || e) });
  if (m.op === 'listen') {
    const s = net.createServer();
    s.once('error', fail);
    // The parent gets its own copy of the listening socket; this one must stop accepting.
    s.listen(m.port || 0, m.host, () => process.send({ id: m.id, port: s.address().port }, s, () => s.close()));
  } else if (m.op === 'connect') {
    const c = net.connect(m.port, m.host);
    c.once('error', fail);
    c.once('connect', () => { c.removeListener('error', fail); c.pause(); process.send({ id: m.id }, c); });
  }
});
process.on('disconnect', () => process.exit(0));
`;

/** One broker process in a network namespace; stopped with the test. */
export class NetnsBroker {
  private readonly child: ChildProcess;
  private seq = 0;
  private readonly pending = new Map<number, { res(v: { port?: number; handle?: unknown }): void; rej(e: Error): void }>();
  private readonly exited: Promise<void>;

  constructor(readonly pid: number) {
    this.child = spawn('nsenter', ['-t', String(pid), '-n', '--', process.execPath, '-e', BROKER], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    this.exited = new Promise((res) => this.child.once('exit', () => res()));
    this.child.on('message', (m: { id: number; port?: number; error?: string }, handle: unknown) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.error) p.rej(new Error(`netns ${pid}: ${m.error}`));
      else p.res({ ...(m.port !== undefined ? { port: m.port } : {}), handle });
    });
    this.child.once('exit', (code) => {
      for (const p of this.pending.values()) p.rej(new Error(`netns broker for ${pid} exited ${code}`));
      this.pending.clear();
    });
  }

  private ask(msg: Record<string, unknown>, timeoutMs = 10_000): Promise<{ port?: number; handle?: unknown }> {
    const id = ++this.seq;
    return new Promise((res, rej) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        rej(new Error(`netns broker for ${this.pid}: no answer to ${JSON.stringify(msg)} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { res: (v) => (clearTimeout(timer), res(v)), rej: (e) => (clearTimeout(timer), rej(e)) });
      this.child.send({ ...msg, id });
    });
  }

  async listen(host = '127.0.0.1', port = 0): Promise<net.Server> {
    return (await this.ask({ op: 'listen', host, port })).handle as net.Server;
  }

  async connect(host: string, port: number): Promise<net.Socket> {
    const s = (await this.ask({ op: 'connect', host, port })).handle as net.Socket;
    return s;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      if (this.child.connected) this.child.disconnect();
      const hard = setTimeout(() => this.child.kill('SIGKILL'), 3000);
      await this.exited;
      clearTimeout(hard);
    }
  }
}

/** A place's TCP door: listen and connect there. The broker (if any) stops with the test. */
export interface NetDoor {
  netnsPid: number | undefined;
  listen(host?: string, port?: number): Promise<net.Server>;
  connect(host: string, port: number): Promise<net.Socket>;
  stop(): Promise<void>;
}

export function netDoor(t: Tap, place: NetPlace): NetDoor {
  const pid = netnsPidOf(place);
  if (pid === undefined) {
    return {
      netnsPid: undefined,
      listen: (host = '127.0.0.1', port = 0) =>
        new Promise((res, rej) => {
          const s = net.createServer();
          s.once('error', rej);
          s.listen(port, host, () => (s.off('error', rej), res(s)));
        }),
      connect: (host, port) =>
        new Promise((res, rej) => {
          const c = net.connect(port, host);
          c.once('error', rej);
          c.once('connect', () => (c.off('error', rej), res(c)));
        }),
      stop: async () => {},
    };
  }
  const broker = new NetnsBroker(pid);
  t.teardown(() => broker.stop());
  return { netnsPid: pid, listen: (h, p) => broker.listen(h, p), connect: (h, p) => broker.connect(h, p), stop: () => broker.stop() };
}

/** A port that was free a moment ago in that place (listen on 0, close). */
export async function freePort(door: NetDoor): Promise<number> {
  const s = await door.listen('127.0.0.1', 0);
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((res) => s.close(() => res()));
  return port;
}

/** Resolves once something accepts on host:port in that place, or rejects after `timeoutMs`. */
export async function waitForPort(door: NetDoor, host: string, port: number, timeoutMs = 10_000, alive?: () => string | null): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const dead = alive?.();
    if (dead) throw new Error(dead);
    try {
      const s = await door.connect(host, port);
      s.destroy();
      return;
    } catch (e) {
      last = (e as Error).message;
    }
    if (Date.now() > until) throw new Error(`nothing accepted on ${host}:${port} within ${timeoutMs} ms (${last})`);
    await new Promise((r) => setTimeout(r, 20)); // poll interval of a bounded wait for a port
  }
}

export type Fault =
  | { kind: 'pass' }
  | { kind: 'cut'; after: number; from?: 'stream' | 'body'; reset?: boolean }
  | { kind: 'stall'; after: number; from?: 'stream' | 'body' }
  | { kind: 'flip'; at: number; from?: 'stream' | 'body'; mask?: number };

export interface ProxyConnection {
  /** 1-based, in accept order. */
  index: number;
  /** Client→server bytes forwarded. */
  bytesUp: number;
  /** Server→client bytes forwarded (after a stall: what was forwarded before it). */
  bytesDown: number;
  /** Server→client bytes received from the server (forwarded or not). */
  bytesFromServer: number;
  /** Stream offset of the first body byte when the proxy found the end of the first headers. */
  bodyStart: number | null;
  state: 'open' | 'cut' | 'stalled' | 'closed';
  /** Stream offset of the byte that was flipped, once it was. */
  flippedAt: number | null;
}

export interface FaultProxy {
  host: string;
  port: number;
  /** Set the fault for every connection (those open now and to come) or, with `connection`, for that one (1-based accept index). */
  set(fault: Fault, o?: { connection?: number }): void;
  cutAfter(n: number, o?: { connection?: number; from?: 'stream' | 'body'; reset?: boolean }): void;
  stallAfter(n: number, o?: { connection?: number; from?: 'stream' | 'body' }): void;
  flipByteAt(offset: number, o?: { connection?: number; from?: 'stream' | 'body'; mask?: number }): void;
  pass(o?: { connection?: number }): void;
  /** The accept index the next connection will get. */
  next(): number;
  connections(): ProxyConnection[];
  /** Emits 'change' (a ProxyConnection) on accept, on every forwarded chunk, on cut/stall/flip and on close. */
  events: EventEmitter;
  /** Resolves with the first connection record (now or later) matching `pred`. */
  waitFor(pred: (c: ProxyConnection) => boolean, timeoutMs?: number, what?: string): Promise<ProxyConnection>;
  /** Destroy every open connection (e.g. stalled ones). */
  dropAll(): void;
  stop(): Promise<void>;
}

function splitHostPort(target: string): [string, number] {
  const i = target.lastIndexOf(':');
  if (i < 0) throw new Error(`fault proxy: target ${target} is not host:port`);
  return [target.slice(0, i).replace(/^\[|\]$/g, ''), Number(target.slice(i + 1))];
}

/**
 * A fault proxy on 127.0.0.1 (in the place's network namespace) to `target` (host:port, reached
 * from the same place). Starts in `pass`.
 */
export async function startFaultProxy(t: Tap, opts: { target: string } & NetPlace): Promise<FaultProxy> {
  const [thost, tport] = splitHostPort(opts.target);
  const door = netDoor(t, opts);
  const server = await door.listen('127.0.0.1', 0);
  const port = (server.address() as net.AddressInfo).port;
  const events = new EventEmitter();
  events.setMaxListeners(0);
  let global: Fault = { kind: 'pass' };
  const perConn = new Map<number, Fault>();
  const records: ProxyConnection[] = [];
  const live = new Set<net.Socket>();
  let accepted = 0;
  const changed = (c: ProxyConnection) => events.emit('change', c);

  server.on('connection', (client: net.Socket) => {
    const rec: ProxyConnection = { index: ++accepted, bytesUp: 0, bytesDown: 0, bytesFromServer: 0, bodyStart: null, state: 'open', flippedAt: null };
    records.push(rec);
    live.add(client);
    client.pause();
    client.on('error', () => {});
    changed(rec);
    let upstream: net.Socket | null = null;
    let headTail = Buffer.alloc(0); // last bytes of the stream while looking for CRLFCRLF
    const close = () => {
      if (rec.state === 'open') rec.state = 'closed';
      client.destroy();
      upstream?.destroy();
      live.delete(client);
      if (upstream) live.delete(upstream);
      changed(rec);
    };
    client.on('close', close);
    door.connect(thost, tport).then(
      (up) => {
        upstream = up;
        live.add(up);
        up.on('error', () => {});
        up.on('close', () => {
          if (rec.state === 'stalled') return; // a stall keeps the client waiting
          // Let what was written drain, then close the client side too.
          client.end();
        });
        up.on('end', () => {
          if (rec.state !== 'stalled') client.end();
        });
        if (client.destroyed) return up.destroy();
        client.on('data', (d: Buffer) => {
          rec.bytesUp += d.length;
          if (!up.write(d)) client.pause(), up.once('drain', () => client.resume());
          changed(rec);
        });
        up.on('data', (d: Buffer) => {
          const start = rec.bytesFromServer;
          rec.bytesFromServer += d.length;
          if (rec.bodyStart === null) {
            const scan = Buffer.concat([headTail, d]);
            const i = scan.indexOf('\r\n\r\n');
            if (i >= 0) rec.bodyStart = start - headTail.length + i + 4;
            else headTail = scan.subarray(Math.max(0, scan.length - 3));
          }
          if (rec.state !== 'open') return changed(rec); // stalled: hold nothing, forward nothing
          const fault = perConn.get(rec.index) ?? global;
          let out = d;
          if (fault.kind !== 'pass') {
            const base = fault.from === 'body' ? rec.bodyStart : 0;
            if (base === null) {
              // headers not complete yet: nothing of the body in this chunk; forward as is
            } else if (fault.kind === 'flip') {
              const at = base + fault.at;
              if (rec.flippedAt === null && at >= start && at < start + d.length) {
                out = Buffer.from(d);
                out[at - start] ^= fault.mask ?? 0xff;
                rec.flippedAt = at;
              }
            } else {
              const limit = base + fault.after;
              const room = Math.max(0, limit - start);
              if (room < d.length) {
                const head = d.subarray(0, room);
                rec.bytesDown += head.length;
                if (fault.kind === 'cut') {
                  rec.state = 'cut';
                  const finish = () => {
                    if (fault.reset) client.resetAndDestroy();
                    else client.destroy();
                    up.destroy();
                  };
                  if (head.length) client.write(head, finish);
                  else finish();
                } else {
                  rec.state = 'stalled';
                  if (head.length) client.write(head);
                }
                return changed(rec);
              }
            }
          }
          rec.bytesDown += out.length;
          if (!client.write(out)) up.pause(), client.once('drain', () => up.resume());
          changed(rec);
        });
        client.resume();
        up.resume();
      },
      () => close(),
    );
  });

  const byOpt = (fault: Fault, o?: { connection?: number }) => {
    if (o?.connection !== undefined) perConn.set(o.connection, fault);
    else {
      perConn.clear();
      global = fault;
    }
  };

  const proxy: FaultProxy = {
    host: '127.0.0.1',
    port,
    events,
    set: byOpt,
    cutAfter: (n, o = {}) => byOpt({ kind: 'cut', after: n, ...(o.from ? { from: o.from } : {}), ...(o.reset ? { reset: true } : {}) }, o),
    stallAfter: (n, o = {}) => byOpt({ kind: 'stall', after: n, ...(o.from ? { from: o.from } : {}) }, o),
    flipByteAt: (at, o = {}) => byOpt({ kind: 'flip', at, ...(o.from ? { from: o.from } : {}), ...(o.mask !== undefined ? { mask: o.mask } : {}) }, o),
    pass: (o) => byOpt({ kind: 'pass' }, o),
    next: () => accepted + 1,
    connections: () => records.map((r) => ({ ...r })),
    waitFor(pred, timeoutMs = 10_000, what = 'a proxy connection state') {
      const now = records.find(pred);
      if (now) return Promise.resolve({ ...now });
      return new Promise((res, rej) => {
        const fn = (c: ProxyConnection) => {
          if (!pred(c)) return;
          clearTimeout(timer);
          events.off('change', fn);
          res({ ...c });
        };
        const timer = setTimeout(() => {
          events.off('change', fn);
          rej(new Error(`fault proxy: timed out after ${timeoutMs} ms waiting for ${what}; connections: ${JSON.stringify(records)}`));
        }, timeoutMs);
        events.on('change', fn);
      });
    },
    dropAll() {
      for (const s of live) s.destroy();
      live.clear();
    },
    async stop() {
      proxy.dropAll();
      await new Promise<void>((res) => server.close(() => res()));
    },
  };
  t.teardown(() => proxy.stop());
  return proxy;
}
