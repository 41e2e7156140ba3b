/**
 * A real Mosquitto (Debian's /usr/sbin/mosquitto) for the fleet tests, started inside the
 * sandbox's network namespace on 127.0.0.1 — or in another place: `{netnsPid, address}`, e.g. a
 * remote host inside a device (test/helpers/device.ts addRemoteHost) — with a config file of the
 * test's own: a password file, a plain listener and, given a CA, a TLS listener (certificate of
 * the test CA), no persistence.
 * It can be killed and started again on the same ports (fault tests). `client()` gives the test
 * an MQTT.js client whose TCP connection lives in the sandbox (through the net door).
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MqttClient, type IClientOptions } from 'mqtt';
import { freePort, inNetns, netDoor, waitForPort, type NetDoor } from './fault-proxy.js';
import { execBounded, succeeded, type Sandbox } from './sandbox.js';
import type { TestCa } from './test-ca.js';

interface Tap {
  teardown(fn: () => unknown): void;
}

export interface Received {
  topic: string;
  text: string;
  retain: boolean;
  at: number;
}

export interface TestClient {
  client: MqttClient;
  messages: Received[];
  /** Resolves with the first message (seen or future) that satisfies `pred`, bounded. */
  waitFor(pred: (m: Received) => boolean, timeoutMs: number, what: string): Promise<Received>;
  publish(topic: string, payload: string, opts?: { retain?: boolean; qos?: 0 | 1 }): Promise<void>;
  close(): Promise<void>;
}

export interface Broker {
  port: number;
  /** 0 without a CA (no TLS listener). */
  tlsPort: number;
  user: string;
  password: string;
  passwordFile: string;
  door: NetDoor;
  running(): boolean;
  output(): string;
  start(): Promise<void>;
  kill(): Promise<void>;
  /** A client of the test on the plain listener, subscribed to `topics` (QoS 1) before it resolves. */
  client(topics: string[], opts?: Partial<IClientOptions>): Promise<TestClient>;
}

/** Where the broker runs other than a sandbox: a network namespace (by a PID in it) and the address it listens on there. */
export interface BrokerPlace {
  netnsPid: number;
  address: string;
}

export async function startMosquitto(t: Tap, where: Sandbox | BrokerPlace, dir: string, ca?: TestCa): Promise<Broker> {
  const sb = 'spawnInside' in where ? where : null;
  const address = sb ? '127.0.0.1' : (where as BrokerPlace).address;
  const door = netDoor(t, sb ? { sandbox: sb } : { netnsPid: (where as BrokerPlace).netnsPid });
  // Free on 127.0.0.1 of that namespace means free on every address of it.
  const [port, tlsPort] = [await freePort(door), ca ? await freePort(door) : 0];
  const user = 'smd-dev1';
  const password = 'right-password';
  const passwordFile = join(dir, 'mosquitto.passwd');
  await succeeded(execBounded('mosquitto_passwd', ['-b', '-c', passwordFile, user, password], { timeoutMs: 10_000 }), 'mosquitto_passwd', []);
  await succeeded(execBounded('mosquitto_passwd', ['-b', passwordFile, 'tester', 'tester-pass'], { timeoutMs: 10_000 }), 'mosquitto_passwd', []);
  chmodSync(passwordFile, 0o600);
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(
    conf,
    [
      'per_listener_settings false',
      'allow_anonymous false',
      `password_file ${passwordFile}`,
      'persistence false',
      'user root',
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      'log_type notice',
      `listener ${port} ${address}`,
      ...(ca ? [`listener ${tlsPort} ${address}`, `cafile ${ca.caCert}`, `certfile ${ca.serverCert}`, `keyfile ${ca.serverKey}`] : []),
      '',
    ].join('\n'),
  );
  let proc: ChildProcess | null = null;
  let out = '';
  const clients: TestClient[] = [];

  const broker: Broker = {
    port,
    tlsPort,
    user,
    password,
    passwordFile,
    door,
    running: () => proc !== null && proc.exitCode === null && proc.signalCode === null,
    output: () => out,
    async start() {
      // nsenter execs mosquitto: this process is the broker itself.
      const opts: SpawnOptions = { stdio: ['ignore', 'pipe', 'pipe'] };
      const p = sb ? sb.spawnInside('/usr/sbin/mosquitto', ['-c', conf], opts) : spawn(...inNetns({ netnsPid: door.netnsPid! }, '/usr/sbin/mosquitto', ['-c', conf]), opts);
      p.stdout!.on('data', (d) => (out += d));
      p.stderr!.on('data', (d) => (out += d));
      proc = p;
      await waitForPort(door, address, port, 10_000, () => (p.exitCode !== null ? `mosquitto exited ${p.exitCode}: ${out}` : null));
      if (ca) await waitForPort(door, address, tlsPort, 10_000);
    },
    async kill() {
      const p = proc;
      if (!p || p.exitCode !== null || p.signalCode !== null) return;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGKILL');
      await exited;
    },
    async client(topics, opts = {}) {
      const socket = await door.connect(address, port);
      const client = new MqttClient(() => socket as never, { protocolVersion: 4, clean: true, reconnectPeriod: 0, username: 'tester', password: 'tester-pass', clientId: `test-${process.pid}-${clients.length}-${Date.now()}`, ...opts });
      const messages: Received[] = [];
      const waiters = new Set<() => void>();
      client.on('message', (topic, payload, packet) => {
        messages.push({ topic, text: payload.toString('utf8'), retain: packet.retain, at: Date.now() });
        for (const w of [...waiters]) w();
      });
      client.on('error', () => {});
      await new Promise<void>((res, rej) => {
        const timer = setTimeout(() => rej(new Error('test MQTT client: no CONNACK within 10 s')), 10_000);
        client.once('connect', () => (clearTimeout(timer), res()));
      });
      if (topics.length > 0) await client.subscribeAsync(topics, { qos: 1 });
      const tc: TestClient = {
        client,
        messages,
        waitFor(pred, timeoutMs, what) {
          const seen = messages.find(pred);
          if (seen) return Promise.resolve(seen);
          return new Promise((res, rej) => {
            const check = () => {
              const m = messages.find(pred);
              if (!m) return;
              clearTimeout(timer);
              waiters.delete(check);
              res(m);
            };
            const timer = setTimeout(() => {
              waiters.delete(check);
              rej(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last messages: ${JSON.stringify(messages.slice(-3))}`));
            }, timeoutMs);
            waiters.add(check);
          });
        },
        async publish(topic, payload, o = {}) {
          await client.publishAsync(topic, payload, { qos: o.qos ?? 1, retain: o.retain ?? false });
        },
        close: () => new Promise<void>((r) => client.end(true, {}, () => r())),
      };
      clients.push(tc);
      return tc;
    },
  };
  t.teardown(async () => {
    for (const c of clients) await c.close();
    await broker.kill();
  });
  await broker.start();
  return broker;
}
