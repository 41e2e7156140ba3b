import { createConnection, type Socket } from 'node:net';
import { LineFramer } from '../rpc/framing.js';
import type { JsonRpcErrorObject } from '../rpc/protocol.js';

/** An error reply from smd, with its JSON-RPC code and `data.code` (e.g. NOT_FOUND). */
export class RpcCallError extends Error {
  constructor(
    readonly rpcCode: number,
    message: string,
    readonly data?: { code?: string; [k: string]: unknown },
  ) {
    super(message);
    this.name = 'RpcCallError';
  }
  get code(): string | undefined {
    return this.data?.code;
  }
}

/** A JSON-RPC client for smd's Unix sockets: used by smctl, tests and benchmarks. */
export class RpcClient {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private readonly listeners = new Set<(method: string, params: unknown) => void>();
  private closedError: Error | null = null;

  private constructor(private readonly socket: Socket) {
    const framer = new LineFramer(256 * 1024 * 1024);
    socket.on('data', (chunk: Buffer) => {
      for (const line of framer.push(chunk).lines) this.receive(line.toString('utf8'));
    });
    const fail = (err: Error) => {
      this.closedError ??= err;
      for (const p of this.pending.values()) p.reject(this.closedError);
      this.pending.clear();
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('connection to smd closed')));
  }

  static connect(path: string, timeoutMs = 5_000): Promise<RpcClient> {
    return new Promise((resolve, reject) => {
      const socket = createConnection(path);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`timed out connecting to ${path}`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve(new RpcClient(socket));
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        const hint = err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? ' (is smd running? use --socket to choose another socket)' : '';
        reject(new Error(`cannot connect to ${path}: ${err.code ?? err.message}${hint}`));
      });
    });
  }

  call<T = unknown>(method: string, params?: Record<string, unknown>): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.socket.write(JSON.stringify({ jsonrpc: '2.0', id, method, ...(params !== undefined ? { params } : {}) }) + '\n');
    });
  }

  /** Called for every notification (e.g. `event`) the server sends. */
  onNotification(fn: (method: string, params: unknown) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  close(): void {
    this.socket.end();
    this.socket.destroy();
  }

  private receive(text: string): void {
    let msg: { id?: number; method?: string; params?: unknown; result?: unknown; error?: JsonRpcErrorObject };
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.method !== undefined && msg.id === undefined) {
      for (const fn of this.listeners) fn(msg.method, msg.params);
      return;
    }
    const waiter = typeof msg.id === 'number' ? this.pending.get(msg.id) : undefined;
    if (!waiter) return;
    this.pending.delete(msg.id!);
    if (msg.error) waiter.reject(new RpcCallError(msg.error.code, msg.error.message, msg.error.data as RpcCallError['data']));
    else waiter.resolve(msg.result);
  }
}
