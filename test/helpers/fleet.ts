/**
 * One smd with its fleet bridge on a real Mosquitto in a fresh sandbox, hello-http installed and
 * running, and a subscriber on the device's topics: the common start of the fleet tests that
 * watch what reaches the broker.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import { buildExampleImages, startDaemon, tempDir, type RunningDaemon } from './daemon.js';
import { startMosquitto, type Broker, type TestClient } from './mosquitto.js';
import { startSandbox, type Sandbox } from './sandbox.js';
import type { RpcClient } from '../../src/cli/client.js';

export interface FleetDevice {
  sb: Sandbox;
  broker: Broker;
  daemon: RunningDaemon;
  client: RpcClient;
  /** Subscribed to `smd/<deviceId>/#` since before smd went online. */
  watch: TestClient;
  base: string;
  topic(name: string): string;
}

export async function startFleetDevice(t: Test, deviceId: string, opts: { fleet?: Record<string, unknown>; config?: Record<string, unknown> } = {}): Promise<FleetDevice> {
  const sb = await startSandbox(t);
  const dir = tempDir(t);
  const broker = await startMosquitto(t, sb, dir);
  const img = buildExampleImages(join(dir, 'images')).byName;
  const passwordFile = join(dir, 'smd-password');
  writeFileSync(passwordFile, `${broker.password}\n`, { mode: 0o600 });
  const base = `smd/${deviceId}`;
  const topic = (n: string) => `${base}/${n}`;
  const fleet = { url: `mqtt://127.0.0.1:${broker.port}`, deviceId, username: broker.user, passwordFile, ...opts.fleet };
  const daemon = await startDaemon(t, { sandbox: sb, config: { ...opts.config, fleet } });
  t.teardown(() => {
    if (!t.passing()) console.error(`--- smd output (tail) ---\n${daemon.output().slice(-6000)}\n--- mosquitto ---\n${broker.output().slice(-3000)}`);
  });
  const client = await daemon.client();
  const watch = await broker.client([`${base}/#`]);
  await watch.waitFor((m) => m.topic === topic('online') && m.text === 'true', 20_000, 'online true');
  const op = await client.call<{ state: string; error: unknown }>('services.install', { image: img['hello-http-v1']!, wait: true });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  return { sb, broker, daemon, client, watch, base, topic };
}
