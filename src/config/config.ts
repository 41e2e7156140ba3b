import * as z from 'zod';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SmError } from '../errors.js';
import { LOG_LEVELS } from '../log.js';

const MiB = 1024 * 1024;
const positiveInt = z.number().int().positive();

/**
 * The configuration file's schema: it validates, gives defaults and the TypeScript type.
 * `prefault({})` runs an absent section through its schema, so each default is written once.
 */
export const configSchema = z.strictObject({
  dataDir: z.string().min(1).default('/var/lib/smd'),
  runDir: z.string().min(1).default('/run/smd'),
  socket: z.string().min(1).optional(),
  readOnlySocket: z.string().min(1).optional(),
  logLevel: z.enum(LOG_LEVELS).default('info'),
  database: z.strictObject({ path: z.string().min(1).optional() }).prefault({}),
  rpc: z
    .strictObject({
      maxRequestBytes: positiveInt.default(MiB),
      maxBatch: positiveInt.default(1000),
    })
    .prefault({}),
  systemd: z
    .strictObject({
      bus: z.union([z.enum(['system', 'session']), z.string().startsWith('unix:')]).default('system'),
      unitDir: z.string().min(1).default('/run/systemd/system'),
      startTimeoutMs: positiveInt.default(30_000),
      callTimeoutMs: positiveInt.default(10_000),
      restart: z
        .strictObject({
          policy: z.enum(['no', 'on-success', 'on-failure', 'on-abnormal', 'on-watchdog', 'on-abort', 'always']).default('on-failure'),
          restartSec: z.number().nonnegative().default(1),
          burst: z.number().int().nonnegative().default(3),
          intervalSec: z.number().int().nonnegative().default(300),
        })
        .prefault({}),
    })
    .prefault({}),
  services: z
    .strictObject({
      uidRange: z.tuple([positiveInt, positiveInt]).refine(([lo, hi]) => lo <= hi, 'uidRange must be [low, high] with low <= high').default([5000, 9999]),
      defaultTtlDays: z.number().int().nonnegative().default(30),
      settleMs: z.number().int().nonnegative().default(2000),
    })
    .prefault({}),
  images: z
    .strictObject({
      maxArchiveBytes: positiveInt.default(2048 * MiB),
      maxUnpackedBytes: positiveInt.default(4096 * MiB),
      maxEntries: positiveInt.default(200_000),
    })
    .prefault({}),
  traffic: z
    .strictObject({
      enabled: z.boolean().default(true),
      sampleIntervalMs: positiveInt.default(10_000),
      persistIntervalMs: positiveInt.default(60_000),
      period: z.enum(['minute', 'hour', 'day', 'month']).default('day'),
      bridge: z.string().min(1).max(15).default('smd0'),
      subnet: z.string().default('172.30.0.0/16'),
      localSubnets: z.array(z.string()).default(['127.0.0.0/8', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16']),
    })
    .prefault({}),
  journal: z.strictObject({ alertPriority: z.number().int().min(0).max(7).default(3) }).prefault({}),
});

type RawConfig = z.output<typeof configSchema>;

/** The configuration with every path resolved. */
export type Config = Omit<RawConfig, 'socket' | 'readOnlySocket' | 'database'> & {
  socket: string;
  readOnlySocket: string;
  database: { path: string };
};

export const DEFAULT_CONFIG_PATH = '/etc/smd/smd.json';

/** Validates a parsed config object; errors name the offending key. */
export function parseConfig(input: unknown): Config {
  const parsed = configSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const keys = (issue as { keys?: string[] }).keys;
    const path = [...issue.path.map(String), ...(issue.code === 'unrecognized_keys' && keys ? [keys[0]!] : [])].join('.');
    const what = issue.code === 'unrecognized_keys' ? `unknown key "${path}"` : `"${path || '(root)'}": ${issue.message}`;
    throw new SmError('INTERNAL', `invalid configuration: ${what}`, { key: path });
  }
  const c = parsed.data;
  return {
    ...c,
    socket: c.socket ?? join(c.runDir, 'smd.sock'),
    readOnlySocket: c.readOnlySocket ?? join(c.runDir, 'smd-ro.sock'),
    database: { path: c.database.path ?? join(c.dataDir, 'smd.db') },
  };
}

/** Reads and validates the config file. A missing default file means all defaults. */
export function loadConfig(path: string | undefined): Config {
  const file = path ?? DEFAULT_CONFIG_PATH;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (path === undefined && (err as NodeJS.ErrnoException).code === 'ENOENT') return parseConfig({});
    throw new SmError('INTERNAL', `cannot read configuration ${file}: ${(err as Error).message}`, { path: file });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new SmError('INTERNAL', `configuration ${file} is not valid JSON: ${(err as Error).message}`, { path: file });
  }
  return parseConfig(json);
}
