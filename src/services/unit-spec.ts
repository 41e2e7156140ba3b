import type { Config } from '../config/config.js';
import type { UnitSpec } from '../systemd/unit.js';
import { accountName } from './accounts.js';
import { columnsToSettings } from './settings.js';
import type { ImageConfigJson, Row } from './types.js';

export interface UnitPlaces {
  rootDirectory: string;
  dataDir: string;
  stateDir: string;
  /** The service's network namespace, when traffic is enabled. */
  netnsPath?: string | undefined;
  /** The service's own hosts and resolv.conf (with its network), bound read-only over /etc's. */
  hostsFile?: string | undefined;
  resolvConf?: string | undefined;
}

/** The unit a row runs as: pure, from the row, where its pieces are and the systemd settings. */
export function unitSpecOf(row: Row, places: UnitPlaces, systemd: Pick<Config['systemd'], 'restart' | 'startTimeoutMs'>): UnitSpec {
  const settings = columnsToSettings(row);
  const image = JSON.parse(row.imageConfig) as ImageConfigJson;
  const env: Record<string, string> = {};
  for (const kv of image.env) {
    const i = kv.indexOf('=');
    if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  Object.assign(env, { SMD_DATA_DIR: '/data', SMD_STATE_FILE: '/state/state' }, settings.env ?? {});
  const account = row.user ?? accountName(row.uid!);
  return {
    description: `smd service ${row.id} v${row.version}`,
    command: [...image.entrypoint, ...image.cmd],
    env,
    workingDirectory: image.workingDir || '/',
    user: account,
    group: account,
    rootDirectory: places.rootDirectory,
    bindMounts: [
      { source: places.dataDir, target: '/data' },
      { source: places.stateDir, target: '/state' },
      ...(places.hostsFile ? [{ source: places.hostsFile, target: '/etc/hosts', readOnly: true }] : []),
      ...(places.resolvConf ? [{ source: places.resolvConf, target: '/etc/resolv.conf', readOnly: true }] : []),
    ],
    ...(places.netnsPath ? { networkNamespacePath: places.netnsPath } : {}),
    limits: {
      ...(settings.memoryMax ? { memoryMax: settings.memoryMax } : {}),
      ...(settings.cpuQuota ? { cpuQuota: settings.cpuQuota } : {}),
      ...(settings.tasksMax ? { tasksMax: settings.tasksMax } : {}),
    },
    ...(settings.deviceResources?.length ? { devices: settings.deviceResources } : {}),
    restart: systemd.restart,
    startTimeoutSec: Math.ceil(systemd.startTimeoutMs / 1000),
  };
}
