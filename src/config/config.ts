import * as z from 'zod';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SmError } from '../errors.js';
import { LOG_LEVELS } from '../log.js';
import { TRUST_POLICIES } from '../trust/policy.js';
import { DEVICE_ID_PATTERN, TOPIC_PREFIX_PATTERN } from '../fleet/topics.js';

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
      /** Free space of dataDir an install must leave (the disk-space pre-check, SPEC 11). */
      reserveBytes: z.number().int().nonnegative().default(256 * MiB),
      /** A download without progress for this long is cut and resumed. */
      stallTimeoutMs: positiveInt.default(30_000),
      /** Bandwidth cap of all downloads together; absent = no cap. */
      maxDownloadBytesPerSec: positiveInt.optional(),
      /** Blobs of one image fetched at the same time. */
      parallelFetches: positiveInt.max(16).default(3),
      /** Attempts per blob before the fetch fails (each resumes where the last stopped). */
      retries: z.number().int().nonnegative().default(8),
      /**
       * Signatures (SPEC 13): the pinned public keys (PEM files, ECDSA P-256 or Ed25519, read at
       * start) and the policy; `require` is the default with keys, `off` without.
       */
      trust: z
        .strictObject({
          keys: z
            .array(
              z.strictObject({
                id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$/, 'expected an id of letters, digits and . _ @ : -'),
                publicKey: z.string().startsWith('/', 'expected an absolute path'),
              }),
            )
            .refine((keys) => new Set(keys.map((k) => k.id)).size === keys.length, 'key ids must be unique')
            .default([]),
          policy: z.enum(TRUST_POLICIES).optional(),
        })
        .prefault({}),
    })
    .prefault({}),
  /** Per registry `HOST[:PORT]`: credentials, a custom CA, or plain http (SPEC 11). */
  registries: z
    .record(
      z.string().regex(/^[A-Za-z0-9.-]+(:\d{1,5})?$/, 'expected HOST or HOST:PORT'),
      z.strictObject({
        username: z.string().min(1).optional(),
        passwordFile: z.string().startsWith('/', 'expected an absolute path').optional(),
        ca: z.string().startsWith('/', 'expected an absolute path').optional(),
        insecure: z.boolean().default(false),
      }),
    )
    .default({}),
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
  /**
   * Prometheus metrics (`metrics.get`). `textfile`: after every monitoring sample the same text
   * is written atomically to this file, for node_exporter's textfile collector, which reads only
   * `*.prom` files of its `--collector.textfile.directory`.
   */
  metrics: z
    .strictObject({
      textfile: z.string().startsWith('/', 'expected an absolute path').endsWith('.prom', "expected a file name ending in .prom (node_exporter's textfile collector reads only *.prom)").optional(),
    })
    .prefault({}),
  /**
   * The fleet bridge (SPEC 14): smd as a client of an MQTT broker the operator runs. Absent =
   * off. The password is read from `passwordFile` at start (never written in this file).
   */
  fleet: z
    .strictObject({
      enabled: z.boolean().default(true),
      url: z.string().regex(/^mqtts?:\/\/[^/\s?#]+\/?$/, 'expected mqtt://HOST:PORT or mqtts://HOST:PORT'),
      deviceId: z.string().regex(DEVICE_ID_PATTERN, 'expected 1-128 letters, digits and . _ : - (one topic level)'),
      username: z.string().min(1).optional(),
      passwordFile: z.string().startsWith('/', 'expected an absolute path').optional(),
      /** PEM file of the CA that signed the broker's certificate (mqtts). */
      ca: z.string().startsWith('/', 'expected an absolute path').optional(),
      topicPrefix: z.string().regex(TOPIC_PREFIX_PATTERN, 'expected topic levels of letters, digits and . _ : - without wildcards').default('smd'),
      /** Lets `rpc` call methods that change state; off: the read-only socket's rules. */
      allowMutations: z.boolean().default(false),
      keepaliveSec: positiveInt.default(30),
      connectTimeoutMs: positiveInt.default(10_000),
      reconnect: z
        .strictObject({ minMs: positiveInt.default(1000), maxMs: positiveInt.default(60_000) })
        .refine((r) => r.minMs <= r.maxMs, 'reconnect.minMs must not exceed reconnect.maxMs')
        .prefault({}),
      /** `reported` after a change: once quiet for debounceMs, at most maxWaitMs after the first change. */
      report: z.strictObject({ debounceMs: z.number().int().nonnegative().default(250), maxWaitMs: positiveInt.default(1000) }).prefault({}),
      outbox: z.strictObject({ maxMessages: positiveInt.default(10_000) }).prefault({}),
    })
    .optional(),
});

type RawConfig = z.output<typeof configSchema>;

/** The `fleet` section once validated (SPEC 14). */
export type FleetConfig = NonNullable<RawConfig['fleet']>;

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

/**
 * Reads and validates the config file. A missing file at the default path means all defaults,
 * also when it is named (the shipped unit may pass it); any other missing file is an error.
 */
export function loadConfig(path: string | undefined, defaultPath = DEFAULT_CONFIG_PATH): Config {
  const file = path ?? defaultPath;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (file === defaultPath && (err as NodeJS.ErrnoException).code === 'ENOENT') return parseConfig({});
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
