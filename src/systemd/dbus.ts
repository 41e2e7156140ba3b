/**
 * A thin typed wrapper over dbus-next's low-level API.
 *
 * Why not dbus-next's proxy objects: every signal listener on a proxy adds a match rule that is
 * never removed (DEPENDENCIES.md), and on bus loss its pending calls never settle. Here we own
 * the replies (by serial, with a timeout each), the match rules (added once by the caller) and
 * the signals (one dispatcher), and we turn a closed stream into one `close` notification.
 */
import { EventEmitter } from 'node:events';
import dbus from 'dbus-next';
import type { Message as DbusMessage, MessageBus } from 'dbus-next';
import { SmError } from '../errors.js';
import { UNAVAILABLE_ERRORS } from './errors.js';

const { Message, MessageType } = dbus;

export const BUS_NAME = 'org.freedesktop.DBus';
export const BUS_PATH = '/org/freedesktop/DBus';


export interface CallSpec {
  destination: string;
  path: string;
  interface: string;
  member: string;
  signature?: string;
  body?: unknown[];
}

export interface CallOptions {
  timeoutMs: number;
  /**
   * Runs synchronously when the reply is dispatched, before any later message on the connection
   * is handled. Used to register a job waiter so that a JobRemoved right behind the reply is
   * never missed.
   */
  onReply?: (body: unknown[]) => void;
}

/** A signal as the dispatcher sees it. */
export interface DbusSignal {
  sender: string;
  path: string;
  interface: string;
  member: string;
  body: unknown[];
}

/** Raised for a D-Bus error reply; `name` is the D-Bus error name. */
export class DbusCallError extends Error {
  constructor(override readonly name: string, message: string, readonly call: string) {
    super(message);
  }
  get unavailable(): boolean {
    return UNAVAILABLE_ERRORS.has(this.name);
  }
}

interface Pending {
  resolve: (body: unknown[]) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
  onReply?: (body: unknown[]) => void;
  what: string;
}

interface ConnectionEvents {
  signal: [DbusSignal];
  close: [Error];
}

/**
 * One connection to a bus. `open()` resolves once the bus said Hello; after that the connection
 * emits `signal` for every signal it receives and `close` exactly once when it is gone (stream
 * closed or errored, or `close()` called). Every call has a timeout; all pending calls fail with
 * UNAVAILABLE when the connection closes.
 */
export class DbusConnection extends EventEmitter<ConnectionEvents> {
  private bus: MessageBus | null = null;
  private readonly pending = new Map<number, Pending>();
  private closed = false;
  uniqueName: string | null = null;

  constructor(private readonly address: string) {
    super();
  }

  /** Connect and wait for Hello, bounded. Rejects with UNAVAILABLE. */
  open(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const fail = (err: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.shutdown(asError(err));
        reject(unavailable(`D-Bus ${this.address}: ${asError(err).message}`, err));
      };
      const timer = setTimeout(() => fail(new Error(`no Hello within ${timeoutMs} ms`)), timeoutMs);
      let bus: MessageBus;
      try {
        bus = dbus.sessionBus({ busAddress: streamAddress(this.address) });
      } catch (err) {
        fail(err);
        return;
      }
      this.bus = bus;
      // The stream: dbus-next never reports its end as a disconnect, so watch it ourselves.
      const stream = (bus as unknown as { _connection: { stream: NodeJS.EventEmitter; on(ev: string, fn: (...a: unknown[]) => void): void } })._connection;
      stream.stream.on('close', () => this.shutdown(new Error('bus connection closed')));
      stream.on('end', () => this.shutdown(new Error('bus connection ended')));
      bus.on('error', (err: unknown) => {
        if (!settled) fail(err);
        else this.shutdown(asError(err));
      });
      bus.on('message', (msg: DbusMessage) => this.dispatch(msg));
      bus.on('connect', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.uniqueName = (bus as unknown as { name: string | null }).name;
        resolve();
      });
      // dbus-next's own Hello rejects into an unhandled throw on an error reply; nothing to do here
      // but make sure its internal call cannot crash the process.
    });
  }

  get isOpen(): boolean {
    return this.bus !== null && !this.closed;
  }

  /** Send a method call and wait for its reply body, bounded by `timeoutMs`. */
  call(spec: CallSpec, opts: CallOptions): Promise<unknown[]> {
    const what = `${spec.interface}.${spec.member}`;
    if (!this.bus || this.closed) return Promise.reject(unavailable(`${what}: D-Bus connection is down`));
    const bus = this.bus;
    return new Promise<unknown[]>((resolve, reject) => {
      const serial = bus.newSerial();
      const msg = new Message({
        type: MessageType.METHOD_CALL,
        serial,
        destination: spec.destination,
        path: spec.path,
        interface: spec.interface,
        member: spec.member,
        ...(spec.signature ? { signature: spec.signature, body: spec.body ?? [] } : {}),
      });
      const timer = setTimeout(() => {
        if (!this.pending.delete(serial)) return;
        reject(unavailable(`${what}: no reply within ${opts.timeoutMs} ms`, undefined, { timeoutMs: opts.timeoutMs }));
      }, opts.timeoutMs);
      const entry: Pending = { resolve, reject, timer, what };
      if (opts.onReply) entry.onReply = opts.onReply;
      this.pending.set(serial, entry);
      try {
        bus.send(msg);
      } catch (err) {
        this.pending.delete(serial);
        clearTimeout(timer);
        reject(unavailable(`${what}: ${asError(err).message}`, err));
      }
    });
  }

  /** org.freedesktop.DBus.AddMatch. */
  async addMatch(rule: string, timeoutMs: number): Promise<void> {
    await this.call({ destination: BUS_NAME, path: BUS_PATH, interface: BUS_NAME, member: 'AddMatch', signature: 's', body: [rule] }, { timeoutMs });
  }

  close(): void {
    this.shutdown(new Error('closed by caller'));
  }

  private dispatch(msg: DbusMessage): void {
    if (msg.type === MessageType.METHOD_RETURN || msg.type === MessageType.ERROR) {
      const serial = Number(msg.replySerial);
      const p = this.pending.get(serial);
      if (!p) return;
      this.pending.delete(serial);
      clearTimeout(p.timer);
      if (msg.type === MessageType.ERROR) {
        const text = typeof msg.body?.[0] === 'string' ? (msg.body[0] as string) : msg.errorName;
        p.reject(new DbusCallError(msg.errorName, text, p.what));
        return;
      }
      const body = (msg.body ?? []) as unknown[];
      if (p.onReply) {
        try {
          p.onReply(body);
        } catch (err) {
          p.reject(asError(err));
          return;
        }
      }
      p.resolve(body);
    } else if (msg.type === MessageType.SIGNAL) {
      this.emit('signal', { sender: msg.sender, path: msg.path, interface: msg.interface, member: msg.member, body: (msg.body ?? []) as unknown[] });
    }
  }

  private shutdown(reason: Error): void {
    if (this.closed) return;
    this.closed = true;
    for (const [serial, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(unavailable(`${p.what}: D-Bus connection lost (${reason.message})`, reason));
      this.pending.delete(serial);
    }
    const bus = this.bus;
    if (bus) {
      bus.removeAllListeners('message');
      bus.on('error', () => {}); // late stream errors must not crash the process
      try {
        bus.disconnect();
      } catch {
        /* already gone */
      }
      const conn = (bus as unknown as { _connection?: { stream?: { destroy?: () => void } } })._connection;
      conn?.stream?.destroy?.();
    }
    this.emit('close', reason);
  }
}

/** dbus-next uses the optional native `usocket` for `unix:path=`; a plain net.Socket reports close reliably. */
function streamAddress(address: string): string {
  return address
    .split(';')
    .map((a) => (a.startsWith('unix:') ? a.replace(/(^unix:|,)path=/, '$1socket=') : a))
    .join(';');
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

export function unavailable(message: string, cause?: unknown, details?: Record<string, unknown>): SmError {
  return new SmError('UNAVAILABLE', message, details, cause === undefined ? undefined : { cause });
}

/** Unwrap a `v` (Variant) value as dbus-next returns it. */
export function variantValue(v: unknown): unknown {
  if (v !== null && typeof v === 'object' && 'signature' in v && 'value' in v) return (v as { value: unknown }).value;
  return v;
}

/** Build a match rule string with quoted values. */
export function matchRule(parts: Record<string, string>): string {
  return Object.entries(parts)
    .map(([k, v]) => `${k}='${v.replace(/'/g, "'\\''")}'`)
    .join(',');
}
