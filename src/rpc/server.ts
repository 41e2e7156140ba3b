import { createServer, createConnection, type Server, type Socket } from 'node:net';
import { chmod, lstat, unlink, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { SmError } from '../errors.js';
import type { Logger } from '../log.js';
import { LineFramer } from './framing.js';
import { RPC, errorResponse } from './protocol.js';
import type { Dispatcher } from './dispatcher.js';
import type { ConnectionHandle } from './registry.js';

export interface RpcServerOptions {
  path: string;
  readOnly: boolean;
  mode: number;
  maxRequestBytes: number;
  /** Requests of one connection processed at once; more pause reading (backpressure). */
  maxInFlight?: number;
  maxConnections?: number;
  /** A client whose unread replies exceed this many bytes is disconnected (default 4 MiB). */
  maxQueuedOutputBytes?: number;
}

let nextConnectionId = 1;

/** JSON-RPC 2.0 over a Unix stream socket, one message per line. */
export class RpcServer {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();

  constructor(
    private readonly dispatcher: Dispatcher,
    private readonly logger: Logger,
    private readonly opts: RpcServerOptions,
  ) {}

  async listen(): Promise<void> {
    const { path, mode } = this.opts;
    await mkdir(dirname(path), { recursive: true });
    await removeStaleSocket(path);
    const server = createServer({ allowHalfOpen: false }, (socket) => this.accept(socket));
    server.maxConnections = this.opts.maxConnections ?? 1024;
    // Create the socket with its final mode: no window in which it is wider than asked.
    const oldMask = process.umask(~mode & 0o777);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(path, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(oldMask);
    }
    await chmod(path, mode);
    server.on('error', (err) => this.logger.error('rpc socket error', { path, err }));
    this.server = server;
  }

  get connectionCount(): number {
    return this.sockets.size;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await closed;
    await unlink(this.opts.path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') this.logger.warn('rpc socket file not removed', { path: this.opts.path, err });
    });
  }

  private accept(socket: Socket): void {
    this.sockets.add(socket);
    const framer = new LineFramer(this.opts.maxRequestBytes);
    const maxInFlight = this.opts.maxInFlight ?? 32;
    const maxQueued = this.opts.maxQueuedOutputBytes ?? 4 * 1024 * 1024;
    const closeHandlers: (() => void)[] = [];
    let inFlight = 0;
    let closing = false;

    const send = (value: unknown): void => {
      if (socket.destroyed || socket.writableEnded) return;
      if (socket.writableLength > maxQueued) {
        this.logger.warn('rpc client reads its replies too slowly; disconnecting', { connection: conn.id, queuedBytes: socket.writableLength });
        socket.destroy();
        return;
      }
      socket.write(JSON.stringify(value) + '\n');
    };
    /** After an oversized message: read nothing more, answer what is in flight, then hang up. */
    const endWhenAnswered = () => {
      if (closing && inFlight === 0 && !socket.writableEnded) socket.end();
    };
    const conn: ConnectionHandle = {
      id: nextConnectionId++,
      notify: (method, params) => send({ jsonrpc: '2.0', method, params }),
      onClose: (fn) => closeHandlers.push(fn),
    };
    const ctx = { readOnly: this.opts.readOnly, connection: conn };

    socket.on('data', (chunk: Buffer) => {
      if (closing) return;
      const { lines, overflow } = framer.push(chunk);
      for (const line of lines) {
        // Synchronous methods are answered at once; the others when their promise settles.
        const reply = this.dispatcher.dispatch(line, ctx);
        if (!(reply instanceof Promise)) {
          if (reply !== null) send(reply);
          continue;
        }
        inFlight++;
        if (inFlight >= maxInFlight) socket.pause();
        void reply.then((r) => {
          inFlight--;
          if (r !== null) send(r);
          if (inFlight < maxInFlight && !closing) socket.resume();
          endWhenAnswered();
        });
      }
      if (overflow) {
        // The rest of an oversized message cannot be framed reliably: answer it, answer the
        // complete requests before it, and hang up (reading on, to discard, so the client's
        // pending write can finish and it sees the close).
        send(errorResponse(null, { code: RPC.INVALID_REQUEST, message: `Invalid Request: message exceeds ${this.opts.maxRequestBytes} bytes` }));
        closing = true;
        endWhenAnswered();
      }
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      this.sockets.delete(socket);
      for (const fn of closeHandlers) fn();
    });
  }
}

/**
 * A socket file left by a crashed smd is replaced; a live one means another smd is running
 * and we refuse to start; anything that is not a socket is never deleted.
 */
async function removeStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new SmError('CONFLICT', `${path} exists and is not a socket; refusing to replace it`, { path });
  const alive = await new Promise<boolean>((resolve) => {
    const probe = createConnection(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw new SmError('CONFLICT', `another process is serving ${path}; is smd already running?`, { path });
  await unlink(path);
}
