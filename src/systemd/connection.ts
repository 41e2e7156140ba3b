/**
 * The connection to systemd: one D-Bus connection, its three match rules, health, the liveness
 * ping, reconnect with backoff, and attaching to the manager (Subscribe). What happens after an
 * attach (an owed reload, the resync) and what a loss means for waiting jobs belong to the other
 * parts of the adapter; they come in as hooks.
 *
 * - Three match rules for the life of a connection (PropertiesChanged under the unit path
 *   namespace, JobRemoved, NameOwnerChanged of org.freedesktop.systemd1) and one dispatcher.
 * - Every call has a timeout. Bus loss is noticed from the stream, failed calls and a periodic
 *   ping; then we reconnect with backoff, re-Subscribe and the hooks resynchronise.
 */
import { SmError } from '../errors.js';
import type { Logger } from '../log.js';
import { BUS_NAME, BUS_PATH, DbusCallError, DbusConnection, matchRule, unavailable, type CallSpec, type DbusSignal } from './dbus.js';
import { fromDbusError } from './errors.js';
import { PROPS, SD_MANAGER, SD_NAME, SD_PATH, UNIT_PATH_PREFIX } from './props.js';
import type { SystemdHealth } from './types.js';

type BusState = SystemdHealth['bus'];

export interface LinkOptions {
  /** 'system', 'session', or a D-Bus address such as `unix:path=/run/user/0/bus`. */
  bus: string;
  logger: Logger;
  callTimeoutMs: number;
  pingIntervalMs: number;
  backoffMs: { initial: number; max: number };
}

export interface LinkHooks {
  /** The manager answered Subscribe: bring everything up to date (owed reload, resync). */
  attached(): Promise<void>;
  /** The connection or the manager is gone: whatever waits on it fails with `err`. */
  lost(err: SmError): void;
  /** Every systemd signal on the current connection but NameOwnerChanged (handled here). */
  signal(s: DbusSignal): void;
  /** Health changed (ok, bus or manager). */
  health(h: SystemdHealth): void;
}

export interface CallOpts {
  timeoutMs?: number;
  unit?: string;
  onReply?: (body: unknown[]) => void;
}

export class SystemdLink {
  private conn: DbusConnection | null = null;
  private busState: BusState = 'down';
  private managerUp = false;
  private lastError = 'not connected yet';
  private reconnects = 0;
  private everConnected = false;
  private attempt = 0;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private pingTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private attaching: Promise<void> | null = null;

  constructor(
    private readonly opts: LinkOptions,
    private readonly hooks: LinkHooks,
  ) {}

  private get log(): Logger {
    return this.opts.logger;
  }

  /** Connect once; resolves whether or not the bus is reachable (it then retries in the background). */
  async connect(): Promise<void> {
    if (this.closed) throw new SmError('INTERNAL', 'systemd adapter is closed');
    if (this.conn || this.reconnectTimer) return;
    this.pingTimer = setInterval(() => void this.ping(), this.opts.pingIntervalMs);
    this.pingTimer.unref();
    try {
      await this.establish();
    } catch (err) {
      this.log.warn('systemd bus unavailable, retrying in the background', { error: (err as Error).message });
      this.scheduleReconnect();
    }
  }

  /** Stops reconnecting and pinging and drops the connection (the caller fails its waiters). */
  close(): void {
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.reconnectTimer = this.pingTimer = null;
  }

  /** After close(): drop the connection and report health closed. */
  drop(): void {
    const conn = this.conn;
    this.conn = null;
    conn?.close();
    this.setHealth('closed', false, 'closed');
  }

  get uniqueName(): string | null {
    return this.conn?.uniqueName ?? null;
  }

  health(): SystemdHealth {
    const ok = this.busState === 'up' && this.managerUp;
    return { ok, detail: ok ? 'connected' : this.lastError, bus: this.busState, manager: this.managerUp, reconnects: this.reconnects };
  }

  private setHealth(bus: BusState, manager: boolean, detail?: string): void {
    const before = this.health();
    this.busState = bus;
    this.managerUp = manager;
    if (detail !== undefined) this.lastError = detail;
    const after = this.health();
    if (before.ok !== after.ok || before.bus !== after.bus || before.manager !== after.manager) {
      this.log.info('systemd health', { ...after });
      this.hooks.health(after);
    }
  }

  private busAddress(): string {
    const b = this.opts.bus;
    if (b === 'system') return process.env.DBUS_SYSTEM_BUS_ADDRESS || 'unix:path=/var/run/dbus/system_bus_socket';
    if (b === 'session') {
      const a = process.env.DBUS_SESSION_BUS_ADDRESS;
      if (!a) throw unavailable('DBUS_SESSION_BUS_ADDRESS is not set');
      return a;
    }
    return b;
  }

  private async establish(): Promise<void> {
    this.setHealth('connecting', false);
    let conn: DbusConnection;
    try {
      conn = new DbusConnection(this.busAddress());
      await conn.open(this.opts.callTimeoutMs);
    } catch (err) {
      this.setHealth('down', false, `bus unreachable: ${(err as Error).message}`);
      throw err;
    }
    if (this.closed) {
      conn.close();
      return;
    }
    conn.on('signal', (s) => this.onSignal(conn, s));
    conn.once('close', (err) => this.onLost(conn, err));
    this.conn = conn;
    if (this.everConnected) this.reconnects++;
    this.everConnected = true;
    try {
      const timeoutMs = this.opts.callTimeoutMs;
      await Promise.all([
        conn.addMatch(matchRule({ type: 'signal', sender: SD_NAME, interface: PROPS, member: 'PropertiesChanged', path_namespace: UNIT_PATH_PREFIX.slice(0, -1) }), timeoutMs),
        conn.addMatch(matchRule({ type: 'signal', sender: SD_NAME, interface: SD_MANAGER, member: 'JobRemoved' }), timeoutMs),
        conn.addMatch(matchRule({ type: 'signal', sender: BUS_NAME, interface: BUS_NAME, member: 'NameOwnerChanged', arg0: SD_NAME }), timeoutMs),
      ]);
      let owner = '';
      try {
        const [o] = await conn.call({ destination: BUS_NAME, path: BUS_PATH, interface: BUS_NAME, member: 'GetNameOwner', signature: 's', body: [SD_NAME] }, { timeoutMs });
        owner = String(o);
      } catch (err) {
        if (!(err instanceof DbusCallError)) throw err;
      }
      this.attempt = 0;
      this.setHealth('up', false, owner ? 'attaching to systemd' : 'systemd manager is not on the bus');
      if (owner) await this.attachManager(conn);
    } catch (err) {
      if (this.conn === conn) conn.close();
      throw err;
    }
  }

  /** Subscribe and resync; on a timeout the connection is dropped and rebuilt. */
  private attachManager(conn: DbusConnection): Promise<void> {
    if (this.attaching) return this.attaching;
    const run = async () => {
      try {
        try {
          await conn.call({ destination: SD_NAME, path: SD_PATH, interface: SD_MANAGER, member: 'Subscribe' }, { timeoutMs: this.opts.callTimeoutMs });
        } catch (err) {
          // systemd keeps its subscribers across daemon-reexec/reload: that is success for us.
          if (!(err instanceof DbusCallError && err.name === 'org.freedesktop.systemd1.AlreadySubscribed')) throw err;
        }
        if (this.conn !== conn) return;
        this.setHealth('up', true, 'connected');
        await this.hooks.attached();
      } catch (err) {
        if (this.conn !== conn) return;
        if (err instanceof DbusCallError && !err.unavailable) {
          this.setHealth('up', false, `systemd refused Subscribe: ${err.message}`);
          return;
        }
        this.log.warn('attaching to systemd failed', { error: (err as Error).message });
        if (err instanceof DbusCallError) {
          this.setHealth('up', false, `systemd manager not reachable: ${err.message}`);
          return; // NameOwnerChanged will tell us when it is back
        }
        conn.close(); // a timeout: start over
      }
    };
    this.attaching = run().finally(() => {
      this.attaching = null;
    });
    return this.attaching;
  }

  private onLost(conn: DbusConnection, err: Error): void {
    if (this.conn !== conn) return;
    this.conn = null;
    this.hooks.lost(unavailable(`D-Bus connection lost while waiting for the job: ${err.message}`, err));
    if (this.closed) return;
    this.log.warn('systemd bus connection lost', { error: err.message });
    this.setHealth('down', false, `bus connection lost: ${err.message}`);
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer) return;
    const { initial, max } = this.opts.backoffMs;
    const base = Math.min(max, initial * 2 ** this.attempt);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.attempt++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.establish().then(
        () => this.log.info('systemd bus reconnected', { reconnects: this.reconnects }),
        () => this.scheduleReconnect(),
      );
    }, delay);
    this.reconnectTimer.unref();
  }

  /**
   * Cheap liveness check: GetId of the bus daemon; a timeout drops the connection. Not
   * Peer.Ping: the system bus policy refuses the Peer interface on the bus daemon.
   */
  private async ping(): Promise<void> {
    const conn = this.conn;
    if (!conn || this.busState !== 'up') return;
    try {
      await conn.call({ destination: BUS_NAME, path: BUS_PATH, interface: BUS_NAME, member: 'GetId' }, { timeoutMs: this.opts.callTimeoutMs });
    } catch (err) {
      if (this.conn === conn) {
        this.log.warn('bus ping failed, reconnecting', { error: (err as Error).message });
        conn.close();
      }
    }
  }

  /** A call to systemd; D-Bus errors come back as SmError codes (systemd/errors.ts). */
  async call(spec: Omit<CallSpec, 'destination'>, opts: CallOpts = {}): Promise<unknown[]> {
    const conn = this.conn;
    const what = `${spec.member}${opts.unit ? ` ${opts.unit}` : ''}`;
    if (!conn || this.busState !== 'up') throw unavailable(`systemd ${what}: D-Bus is not connected (${this.lastError})`);
    if (!this.managerUp) throw unavailable(`systemd ${what}: systemd manager is not reachable (${this.lastError})`);
    try {
      return await conn.call({ destination: SD_NAME, ...spec }, { timeoutMs: opts.timeoutMs ?? this.opts.callTimeoutMs, ...(opts.onReply ? { onReply: opts.onReply } : {}) });
    } catch (err) {
      if (err instanceof DbusCallError) throw fromDbusError(err, what, opts.unit);
      if (err instanceof SmError && err.code === 'UNAVAILABLE' && conn === this.conn) void this.ping();
      throw err;
    }
  }

  managerCall(member: string, signature: string | undefined, body: unknown[], opts: CallOpts = {}): Promise<unknown[]> {
    return this.call({ path: SD_PATH, interface: SD_MANAGER, member, ...(signature ? { signature, body } : {}) }, opts);
  }

  private onSignal(conn: DbusConnection, s: DbusSignal): void {
    if (this.conn !== conn) return;
    try {
      if (s.member === 'NameOwnerChanged' && s.body[0] === SD_NAME) {
        const newOwner = String(s.body[2] ?? '');
        if (newOwner) {
          this.log.info('systemd manager appeared on the bus', { owner: newOwner });
          void this.attachManager(conn);
        } else {
          this.log.warn('systemd manager left the bus');
          this.hooks.lost(unavailable('systemd manager left the bus while waiting for the job'));
          this.setHealth(this.busState, false, 'systemd manager is not on the bus');
        }
      } else {
        this.hooks.signal(s);
      }
    } catch (err) {
      this.log.error('bad systemd signal', { member: s.member, path: s.path, error: (err as Error).message });
    }
  }
}
