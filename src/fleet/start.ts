/**
 * Builds the fleet bridge from the configuration: reads the password and CA files (a missing
 * or unreadable one stops the start, naming the key) and loads MQTT.js only when the fleet is on.
 */
import { readFileSync } from 'node:fs';
import type { FleetConfig } from '../config/config.js';
import type { Db } from '../db/database.js';
import { SmError } from '../errors.js';
import type { EventBus } from '../events/bus.js';
import type { Logger } from '../log.js';
import type { FleetBridge, RpcPort } from './bridge.js';
import { Outbox } from './outbox.js';

export interface FleetFiles {
  password?: string;
  ca?: Buffer;
}

export function readFleetFiles(config: FleetConfig): FleetFiles {
  const read = (key: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new SmError('INTERNAL', `fleet.${key} ${path} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { key: `fleet.${key}`, path });
    }
  };
  const files: FleetFiles = {};
  if (config.passwordFile) files.password = read('passwordFile', config.passwordFile).toString('utf8').replace(/\r?\n$/, '');
  if (config.ca) files.ca = read('ca', config.ca);
  return files;
}

export async function createFleetBridge(deps: { config: FleetConfig; files: FleetFiles; db: Db; rpc: RpcPort; bus: EventBus; logger: Logger; maxRpcBytes: number }): Promise<FleetBridge> {
  const [{ FleetBridge }, mqtt] = await Promise.all([import('./bridge.js'), import('mqtt')]);
  // MQTT.js is CommonJS: bundled, its exports may sit under `default`.
  const connect = mqtt.connect ?? (mqtt as unknown as { default: typeof mqtt }).default.connect;
  return new FleetBridge({
    config: deps.config,
    ...deps.files,
    rpc: deps.rpc,
    bus: deps.bus,
    outbox: new Outbox(deps.db, { maxMessages: deps.config.outbox.maxMessages }),
    logger: deps.logger,
    connect: (url, opts) => connect(url, opts),
    maxRpcBytes: deps.maxRpcBytes,
  });
}
