/**
 * The fleet bridge (SPEC 14): smd as a client of an MQTT broker the operator already runs.
 *
 * It knows the rest of smd only through its public surfaces: the JSON-RPC dispatcher (every
 * call — `state.apply`, the report's reads, the `rpc` topic — goes through `rpc.call` /
 * `rpc.handle`, with the read-only socket's rules for `rpc` unless `allowMutations`) and the
 * event bus. So it can be run and tested against a stand-in for the rest.
 *
 * Connections: MQTT.js's own reconnect is off (`reconnectPeriod: 0`); each attempt is a new
 * client with a clean session, and after a loss the next attempt waits a jittered exponential
 * delay (backoff.ts). Nothing of MQTT.js's in-memory queue is relied on: what must arrive is in
 * the outbox (outbox.ts) and is sent from there, in order, once connected.
 */
import type { IClientOptions, MqttClient } from 'mqtt';
import type { FleetConfig } from '../config/config.js';
import type { EventBus, EventMap } from '../events/bus.js';
import type { Logger } from '../log.js';
import type { JsonRpcResponse } from '../rpc/protocol.js';
import type { CallContext } from '../rpc/registry.js';
import { backoffDelay } from './backoff.js';
import { Debouncer, realTimers, type Timers } from './debounce.js';
import type { Outbox, OutboxKind, OutboxStats } from './outbox.js';
import { fleetTopics, type FleetTopics, type TopicName } from './topics.js';

/** The dispatcher as the bridge uses it (src/rpc/dispatcher.ts). */
export interface RpcPort {
  call(method: string, params: unknown, ctx: CallContext): Promise<unknown>;
  handle(raw: Uint8Array, ctx: CallContext): Promise<JsonRpcResponse | JsonRpcResponse[] | null>;
}

export type ConnectFn = (url: string, opts: IClientOptions) => MqttClient;

export interface FleetBridgeDeps {
  config: FleetConfig;
  /** Read from `passwordFile` by the composition root. */
  password?: string;
  /** PEM of `ca`. */
  ca?: Buffer;
  rpc: RpcPort;
  bus: EventBus;
  outbox: Outbox;
  logger: Logger;
  connect: ConnectFn;
  /** Largest `rpc` payload answered (the sockets' limit). */
  maxRpcBytes: number;
  random?: () => number;
  timers?: Timers;
}

export type ConnectionState = 'connecting' | 'connected' | 'disconnected' | 'stopped';

/** Where the device stands with the desired state it was last given (the report's `status`). */
export interface DesiredStatus {
  state: 'none' | 'applying' | 'applied' | 'failed';
  version: number | null;
  operationId?: string;
  code?: string;
  message?: string;
}

export interface Refusal {
  version: number | null;
  code: string;
  message: string;
  time: number;
}

export interface FleetStatus {
  enabled: true;
  url: string;
  deviceId: string;
  topics: string;
  connection: ConnectionState;
  connectedSince: number | null;
  lastError: { message: string; hint?: string; time: number } | null;
  /** Connections made since start; attempts since the last success. */
  connects: number;
  attempts: number;
  nextAttemptInMs: number | null;
  desired: DesiredStatus & { pending: number | null };
  refused: Refusal | null;
  outbox: OutboxStats;
}

/** Messages sent without waiting for their acknowledgement, per connection. */
const WINDOW = 32;
/** `rpc` requests answered at once; more are refused until one finishes. */
const MAX_RPC_IN_FLIGHT = 16;
/** Operation progress on `events`: at most one per operation in this interval (state changes always). */
const PROGRESS_INTERVAL_MS = 1000;
const OPERATIONS_WAIT_MS = 60_000;
const INTERNAL: CallContext = { readOnly: false };
const READ_ONLY: CallContext = { readOnly: true };

interface Service {
  id: string;
  version: number;
  state: number;
  status: number;
}
interface StateView {
  applied: { version: number; operationId: string; state: 'running' | 'succeeded' | 'failed'; error: { code: string; message: string } | null } | null;
  lastSucceeded: { version: number } | null;
}
interface Operation {
  id: string;
  state: string;
  error: { code: string; message: string } | null;
}

export class FleetBridge {
  readonly topics: FleetTopics;
  private readonly log: Logger;
  private readonly timers: Timers;
  private readonly random: () => number;
  private readonly report: Debouncer;
  private client: MqttClient | null = null;
  private connection: ConnectionState = 'disconnected';
  private connectedSince: number | null = null;
  private lastError: FleetStatus['lastError'] = null;
  private connects = 0;
  private attempts = 0;
  private reconnectTimer: unknown = null;
  private nextAttemptAt: number | null = null;
  private sentUpTo = 0;
  private readonly inflight = new Set<number>();
  private unsubscribe: (() => void)[] = [];
  private quiet = false;
  private stopped = false;

  // The desired state.
  private lastDesiredPayload: string | null = null;
  private status: DesiredStatus = { state: 'none', version: null };
  private refused: Refusal | null = null;
  private running: { version: number } | null = null;
  private pending: { version: number; desired: unknown } | null = null;
  private rpcInFlight = 0;
  private readonly progressSent = new Map<string, { state: string; step: string | null; at: number }>();

  constructor(private readonly deps: FleetBridgeDeps) {
    this.topics = fleetTopics(deps.config.topicPrefix, deps.config.deviceId);
    this.log = deps.logger;
    this.timers = deps.timers ?? realTimers;
    this.random = deps.random ?? Math.random;
    this.report = new Debouncer(() => this.enqueueReport(), { waitMs: deps.config.report.debounceMs, maxWaitMs: deps.config.report.maxWaitMs }, this.timers, (err) =>
      this.log.error('fleet report not built', { err }),
    );
  }

  /** Reads where the desired state stands, listens to the bus, and connects (in the background). */
  async start(): Promise<void> {
    await this.loadStatus();
    const { bus } = this.deps;
    this.unsubscribe = [
      bus.subscribe('service', (e) => {
        this.event('service', e);
        this.report.trigger();
      }),
      bus.subscribe('operation', (e) => this.onOperation(e)),
      bus.subscribe('alert', (e) => this.event('alert', e)),
      bus.subscribe('users', (e) => {
        this.event('users', e);
        this.report.trigger();
      }),
    ];
    this.connectNow();
  }

  /** Shutdown, first step: take no more desired states or rpc requests. */
  quiesce(): void {
    this.quiet = true;
  }

  /** Shutdown: the last report into the outbox, `online: false`, disconnect (bounded). */
  async stop(timeoutMs = 2000): Promise<void> {
    if (this.stopped) return;
    this.quiet = true;
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
    // Shutting down: a report that cannot be built now is logged, and the next start reports anew.
    await this.report.flush().catch((err: unknown) => this.log.warn('fleet: the last report before the stop failed', { err }));
    this.report.close();
    this.stopped = true;
    this.clearReconnect();
    const client = this.client;
    this.client = null;
    this.connection = 'stopped';
    if (!client) return;
    const bounded = <T>(p: Promise<T>) => Promise.race([p, new Promise<void>((r) => this.timers.setTimeout(r, timeoutMs))]);
    if (client.connected) {
      await bounded(new Promise<void>((r) => client.publish(this.topics.online, 'false', { qos: 1, retain: true }, () => r())));
      await bounded(new Promise<void>((r) => client.end(false, {}, () => r())));
    }
    client.end(true);
  }

  status_(): FleetStatus {
    const { config, outbox } = this.deps;
    return {
      enabled: true,
      url: config.url,
      deviceId: config.deviceId,
      topics: `${this.topics.base}/`,
      connection: this.connection,
      connectedSince: this.connectedSince,
      lastError: this.lastError,
      connects: this.connects,
      attempts: this.attempts,
      nextAttemptInMs: this.nextAttemptAt === null ? null : Math.max(0, this.nextAttemptAt - this.timers.now()),
      desired: { ...this.status, pending: this.pending?.version ?? null },
      refused: this.refused,
      outbox: outbox.stats(),
    };
  }

  /** `system.health.checks.fleet`. */
  health(): { ok: boolean; detail: string } {
    const { url } = this.deps.config;
    const depth = this.deps.outbox.stats().depth;
    const queued = depth > 0 ? `; ${depth} messages in the outbox` : '';
    if (this.connection === 'connected') return { ok: true, detail: `connected to ${url} as ${this.deps.config.deviceId}${queued}` };
    const why = this.lastError ? `: ${this.lastError.message}${this.lastError.hint ? ` (${this.lastError.hint})` : ''}` : '';
    const next = this.nextAttemptAt !== null ? `; next attempt in ${Math.ceil(Math.max(0, this.nextAttemptAt - this.timers.now()) / 1000)} s` : '';
    return { ok: false, detail: `not connected to ${url}${why}${next}${queued}` };
  }

  // --- connection -------------------------------------------------------------------------

  private connectNow(): void {
    this.reconnectTimer = null;
    this.nextAttemptAt = null;
    if (this.stopped) return;
    const { config, password, ca } = this.deps;
    this.connection = 'connecting';
    const opts: IClientOptions = {
      clientId: `smd-${config.deviceId}`,
      clean: true,
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: config.connectTimeoutMs,
      keepalive: config.keepaliveSec,
      resubscribe: false,
      queueQoSZero: false,
      will: { topic: this.topics.online, payload: Buffer.from('false'), qos: 1, retain: true },
      ...(config.username !== undefined ? { username: config.username } : {}),
      ...(password !== undefined ? { password } : {}),
      ...(ca ? { ca, rejectUnauthorized: true } : {}),
    };
    let client: MqttClient;
    try {
      client = this.deps.connect(config.url, opts);
    } catch (err) {
      this.failed(err);
      this.scheduleReconnect();
      return;
    }
    this.client = client;
    client.on('connect', () => this.guard(client, () => this.onConnect(client)));
    client.on('message', (topic, payload) => this.guard(client, () => this.onMessage(topic, payload)));
    client.on('error', (err) => this.guard(client, () => this.failed(err)));
    client.on('close', () => this.guard(client, () => this.onClose(client)));
  }

  /** Runs `fn` for the current client only; what it throws is logged, never thrown into MQTT.js. */
  private guard(client: MqttClient, fn: () => unknown): void {
    if (client !== this.client) return;
    try {
      const r = fn();
      if (r instanceof Promise) r.catch((err: unknown) => this.log.error('fleet bridge handler failed', { err }));
    } catch (err) {
      this.log.error('fleet bridge handler failed', { err });
    }
  }

  private onConnect(client: MqttClient): void {
    this.connection = 'connected';
    this.connectedSince = this.timers.now();
    this.connects++;
    this.attempts = 0;
    this.lastError = null;
    this.sentUpTo = 0;
    this.inflight.clear();
    this.log.info('fleet: connected', { url: this.deps.config.url, topics: this.topics.base });
    client.subscribe([this.topics.desired, this.topics.rpc], { qos: 1 }, (err) => {
      if (err) this.guard(client, () => this.failed(err));
    });
    client.publish(this.topics.online, 'true', { qos: 1, retain: true });
    // The full report at connect: queued behind what waited in the outbox.
    this.report.trigger();
    void this.report.flush();
    this.pump();
  }

  private failed(err: unknown): void {
    const e = err as Error & { code?: unknown };
    const message = e?.message ?? String(err);
    const hint = hintFor(e, this.deps.config);
    this.lastError = { message, ...(hint ? { hint } : {}), time: this.timers.now() };
    this.log.warn('fleet: broker connection error', { url: this.deps.config.url, error: message, ...(hint ? { hint } : {}) });
  }

  private onClose(client: MqttClient): void {
    const was = this.connection;
    this.client = null;
    this.connection = 'disconnected';
    this.connectedSince = null;
    this.inflight.clear();
    client.removeAllListeners('connect');
    client.removeAllListeners('message');
    client.on('error', () => {}); // a late error of a client we dropped must not be unhandled
    client.end(true);
    if (was === 'connected') this.log.warn('fleet: connection to the broker lost', { url: this.deps.config.url });
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer !== null) return;
    const { minMs, maxMs } = this.deps.config.reconnect;
    const delay = backoffDelay(this.attempts++, { minMs, maxMs }, this.random);
    this.nextAttemptAt = this.timers.now() + delay;
    this.reconnectTimer = this.timers.setTimeout(() => this.connectNow(), delay);
  }

  private clearReconnect(): void {
    if (this.reconnectTimer !== null) this.timers.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.nextAttemptAt = null;
  }

  // --- the outbox -------------------------------------------------------------------------

  private enqueue(kind: OutboxKind, topic: TopicName, payload: string, retain = false): void {
    const { dropped } = this.deps.outbox.enqueue(kind, topic, payload, retain);
    if (dropped > 0) this.log.warn('fleet: outbox full, oldest messages dropped', { dropped, maxMessages: this.deps.config.outbox.maxMessages });
    this.pump();
  }

  /** Sends what waits, oldest first, keeping up to WINDOW unacknowledged on the connection. */
  private pump(): void {
    const client = this.client;
    if (!client || this.connection !== 'connected') return;
    while (this.inflight.size < WINDOW) {
      const rows = this.deps.outbox.next(this.sentUpTo, WINDOW - this.inflight.size);
      if (rows.length === 0) return;
      for (const row of rows) {
        this.sentUpTo = row.id;
        this.inflight.add(row.id);
        // An event carries its outbox id: increasing, so a consumer can de-duplicate and order.
        const payload = row.kind === 'event' ? `{"id":${row.id},${row.payload.slice(1)}` : row.payload;
        client.publish(this.topics.of(row.topic as TopicName), payload, { qos: 1, retain: row.retain }, (err) => {
          if (client !== this.client) return;
          this.inflight.delete(row.id);
          if (err) {
            this.log.warn('fleet: publish failed; it is sent again after the next connect', { id: row.id, error: err.message });
            return;
          }
          this.deps.outbox.delivered(row.id);
          this.pump();
        });
      }
    }
  }

  // --- what the device publishes -----------------------------------------------------------

  /** `events`: `{id, time, type, data}` with `id` the outbox id (added when sent). */
  private event(type: string, data: object): void {
    if (this.stopped) return;
    this.enqueue('event', 'events', JSON.stringify({ time: this.timers.now(), type, data }));
  }

  private onOperation(e: EventMap['operation']): void {
    const finished = e.state === 'succeeded' || e.state === 'failed';
    const last = this.progressSent.get(e.id);
    const now = this.timers.now();
    const changed = !last || last.state !== e.state || last.step !== e.step;
    if (changed || finished || now - last.at >= PROGRESS_INTERVAL_MS) {
      this.event('operation', e);
      this.progressSent.set(e.id, { state: e.state, step: e.step, at: now });
    }
    if (finished) {
      this.progressSent.delete(e.id);
      this.report.trigger();
    }
  }

  private async enqueueReport(): Promise<void> {
    if (this.stopped) return;
    const { rpc } = this.deps;
    const [state, services, layers, users, info] = (await Promise.all([
      rpc.call('state.get', {}, READ_ONLY),
      rpc.call('services.list', {}, READ_ONLY),
      rpc.call('layers.list', {}, READ_ONLY),
      rpc.call('users.get', {}, READ_ONLY),
      rpc.call('system.info', {}, READ_ONLY),
    ])) as [StateView, Service[], { digest: string }[], { users: string[] }, { version: string; systemVersion: number | null; uptimeMs: number }];
    const applied = state.applied;
    const report = {
      desiredVersion: this.status.version,
      status: { state: this.status.state, ...pick(this.status, ['code', 'message', 'operationId']) },
      appliedVersion: applied?.state === 'succeeded' ? applied.version : (state.lastSucceeded?.version ?? null),
      pendingVersion: this.pending?.version ?? null,
      refused: this.refused,
      services: services.map((s) => ({ id: s.id, version: s.version, state: s.state, status: s.status })),
      layers: layers.map((l) => l.digest),
      users: users.users,
      system: { version: info.systemVersion, smd: info.version, uptimeMs: info.uptimeMs },
      time: this.timers.now(),
    };
    if (this.stopped) return;
    this.enqueue('report', 'reported', JSON.stringify(report), true);
  }

  // --- what the device receives -------------------------------------------------------------

  private onMessage(topic: string, payload: Buffer): void {
    if (this.quiet) return;
    const name = this.topics.nameOf(topic);
    if (name === 'desired') this.onDesired(payload);
    else if (name === 'rpc') void this.onRpc(payload);
  }

  private onDesired(payload: Buffer): void {
    const text = payload.toString('utf8');
    // The retained message again (every connect delivers it): already handled.
    if (text === this.lastDesiredPayload) return;
    this.lastDesiredPayload = text;
    if (text.length === 0) return; // the retained message was cleared
    let desired: unknown;
    try {
      desired = JSON.parse(text);
    } catch (err) {
      return this.refuse(null, 'INVALID', `desired is not JSON: ${(err as Error).message}`);
    }
    const version = (desired as { version?: unknown } | null)?.version;
    if (typeof desired !== 'object' || desired === null || Array.isArray(desired) || typeof version !== 'number' || !Number.isSafeInteger(version) || version < 0) {
      return this.refuse(null, 'INVALID', 'desired must be a DesiredState object with an integer version');
    }
    const ahead = Math.max(this.running?.version ?? -1, this.pending?.version ?? -1);
    if (version < ahead) return this.refuse(version, 'CONFLICT', `desired state version ${version} is older than version ${ahead}, which is being applied`);
    if (this.pending) this.event('desired', { state: 'superseded', version: this.pending.version, by: version });
    this.pending = { version, desired };
    this.event('desired', { state: 'received', version });
    this.report.trigger();
    void this.kick();
  }

  private refuse(version: number | null, code: string, message: string): void {
    this.refused = { version, code, message, time: this.timers.now() };
    this.log.warn('fleet: desired state refused', { version, code, message });
    this.event('desired', { state: 'refused', version, code, message });
    this.report.trigger();
  }

  /** Applies the pending desired state unless one is running; the latest pending wins. */
  private async kick(): Promise<void> {
    if (this.running || !this.pending || this.stopped) return;
    const { version, desired } = this.pending;
    this.pending = null;
    this.running = { version };
    try {
      let op: Operation;
      try {
        op = (await this.deps.rpc.call('state.apply', { desired }, INTERNAL)) as Operation;
      } catch (err) {
        const { code, message } = errorInfo(err);
        this.refuse(version, code, message);
        return;
      }
      this.status = { state: 'applying', version, operationId: op.id };
      this.report.trigger();
      while (op.state !== 'succeeded' && op.state !== 'failed') {
        op = (await this.deps.rpc.call('operations.wait', { id: op.id, timeoutMs: OPERATIONS_WAIT_MS }, READ_ONLY)) as Operation;
      }
      this.status =
        op.state === 'succeeded'
          ? { state: 'applied', version, operationId: op.id }
          : { state: 'failed', version, operationId: op.id, ...(op.error ? { code: op.error.code, message: op.error.message } : {}) };
      this.event('desired', { state: this.status.state, version, operationId: op.id, ...(op.error ? { error: op.error } : {}) });
      this.report.trigger();
    } catch (err) {
      this.log.error('fleet: desired state apply not followed', { version, err });
    } finally {
      this.running = null;
      void this.kick();
    }
  }

  private async onRpc(payload: Buffer): Promise<void> {
    const { maxRpcBytes, config } = this.deps;
    let reply: JsonRpcResponse | JsonRpcResponse[] | null;
    if (payload.length > maxRpcBytes) {
      reply = { jsonrpc: '2.0', id: null, error: { code: -32600, message: `Invalid Request: message exceeds ${maxRpcBytes} bytes` } };
    } else if (this.rpcInFlight >= MAX_RPC_IN_FLIGHT) {
      reply = { jsonrpc: '2.0', id: requestId(payload), error: { code: -32000, message: `too many rpc requests at once (${MAX_RPC_IN_FLIGHT}); try again`, data: { code: 'UNAVAILABLE' } } };
    } else {
      this.rpcInFlight++;
      try {
        reply = await this.deps.rpc.handle(payload, { readOnly: !config.allowMutations });
      } finally {
        this.rpcInFlight--;
      }
    }
    if (reply !== null && !this.stopped) this.enqueue('reply', 'rpc/reply', JSON.stringify(reply));
  }

  private async loadStatus(): Promise<void> {
    const view = (await this.deps.rpc.call('state.get', {}, READ_ONLY)) as StateView;
    const a = view.applied;
    if (!a) return;
    this.status = {
      state: a.state === 'succeeded' ? 'applied' : a.state === 'running' ? 'applying' : 'failed',
      version: a.version,
      operationId: a.operationId,
      ...(a.error ? { code: a.error.code, message: a.error.message } : {}),
    };
  }
}

function pick<T extends object, K extends keyof T>(o: T, keys: K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {};
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}

/** An error of the dispatcher as `{code, message}`: the SmError code, or the JSON-RPC kind. */
export function errorInfo(err: unknown): { code: string; message: string } {
  const e = err as { code?: unknown; message?: unknown } | null;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  if (typeof e?.code === 'string') return { code: e.code, message };
  if (e?.code === -32602) return { code: 'INVALID', message };
  if (typeof e?.code === 'number') return { code: `RPC_${-e.code}`, message };
  return { code: 'INTERNAL', message };
}

/** The id of a request, when the payload is one with a usable id (for a refusal). */
function requestId(payload: Buffer): string | number | null {
  try {
    const id = (JSON.parse(payload.toString('utf8')) as { id?: unknown }).id;
    return typeof id === 'string' || typeof id === 'number' ? id : null;
  } catch {
    return null;
  }
}

/** What the operator can do about a connection error. */
export function hintFor(err: { code?: unknown; message?: string } | null, config: Pick<FleetConfig, 'url' | 'username' | 'ca'>): string | undefined {
  const code = err?.code;
  // CONNACK refusals: 4/5 (MQTT 3.1.1), 134/135 (MQTT 5).
  if (code === 4 || code === 5 || code === 134 || code === 135) {
    return config.username === undefined ? 'the broker wants credentials: set fleet.username and fleet.passwordFile' : `the broker refused user ${config.username}: check fleet.username and fleet.passwordFile`;
  }
  if (code === 2) return 'the broker refused the client id: check fleet.deviceId';
  if (typeof code === 'string') {
    if (code === 'ECONNREFUSED') return `nothing accepts connections at ${config.url}: is the broker running?`;
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `the broker's host name of ${config.url} does not resolve`;
    if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL/.test(code)) return config.ca ? `the broker's certificate does not verify with fleet.ca` : `the broker's certificate does not verify: set fleet.ca to the PEM of its CA`;
  }
  return undefined;
}
