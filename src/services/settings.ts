import * as z from 'zod';
import { alertRulesSchema } from '../alerts/rules.js';
import type { services } from '../db/schema.js';
import { POLICY_KEYS, policySettingsShape, type PolicySettings } from '../traffic/policy-schema.js';

const bytes = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

/** Service settings (install and configure); names follow the `services` columns. */
export const settingsSchema = z.strictObject({
  serviceProvider: z.string().max(200).optional(),
  hostname: z
    .string()
    .regex(/^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/, 'expected a host name')
    .optional(),
  /** Days a service not used by the current users is kept after its last start; 0 keeps it forever. */
  ttl: z.number().int().nonnegative().optional(),
  permissions: z.array(z.string().max(200)).max(100).optional(),
  alertRules: alertRulesSchema.optional(),
  ulLimit: bytes.optional(),
  dlLimit: bytes.optional(),
  ulSpeed: bytes.optional(),
  dlSpeed: bytes.optional(),
  storageLimit: bytes.optional(),
  stateLimit: bytes.optional(),
  deviceResources: z
    .array(z.string().regex(/^\/dev\/[A-Za-z0-9._/-]+$/, 'expected a /dev path'))
    .max(100)
    .optional(),
  memoryMax: z.number().int().positive().optional(),
  cpuQuota: z.number().positive().max(100_000).optional(),
  tasksMax: z.number().int().positive().optional(),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name'), z.string().max(32_768)).optional(),
  // Network policy (SPEC 5): exposedPorts, trafficRules, egress, dnsRules, nameservers.
  ...policySettingsShape,
});
export type Settings = z.output<typeof settingsSchema>;

type ServiceRow = typeof services.$inferSelect;
type SettingsColumns = Pick<
  ServiceRow,
  'serviceProvider' | 'hostname' | 'ttl' | 'permissions' | 'alertRules' | 'ulLimit' | 'dlLimit' | 'ulSpeed' | 'dlSpeed' | 'storageLimit' | 'stateLimit' | 'deviceResources' | 'settings' | 'networkPolicy'
>;

/** Settings as the columns store them (JSON where the column is TEXT; the rest in `settings`). */
export function settingsToColumns(s: Settings): SettingsColumns {
  const json = (v: unknown) => (v === undefined ? null : JSON.stringify(v));
  const extra = { memoryMax: s.memoryMax, cpuQuota: s.cpuQuota, tasksMax: s.tasksMax, env: s.env };
  return {
    serviceProvider: s.serviceProvider ?? null,
    hostname: s.hostname ?? null,
    ttl: s.ttl ?? null,
    permissions: json(s.permissions),
    alertRules: json(s.alertRules),
    ulLimit: s.ulLimit ?? null,
    dlLimit: s.dlLimit ?? null,
    ulSpeed: s.ulSpeed ?? null,
    dlSpeed: s.dlSpeed ?? null,
    storageLimit: s.storageLimit ?? null,
    stateLimit: s.stateLimit ?? null,
    deviceResources: json(s.deviceResources),
    settings: JSON.stringify(extra),
    networkPolicy: policyColumn(s),
  };
}

/** The policy settings as the `networkPolicy` column keeps them: JSON of the set fields, null when none. */
function policyColumn(s: Settings): string | null {
  const set = POLICY_KEYS.filter((k) => s[k] !== undefined);
  return set.length === 0 ? null : JSON.stringify(Object.fromEntries(set.map((k) => [k, s[k]])));
}

/** The policy fields of some settings (those set). */
export function policySettingsOf(s: Settings): PolicySettings {
  return Object.fromEntries(POLICY_KEYS.filter((k) => s[k] !== undefined).map((k) => [k, s[k]])) as PolicySettings;
}

export function columnsToSettings(row: SettingsColumns): Settings {
  const parse = (v: string | null) => (v === null ? undefined : (JSON.parse(v) as unknown));
  const extra = JSON.parse(row.settings || '{}') as Partial<Settings>;
  const all: Record<string, unknown> = {
    serviceProvider: row.serviceProvider ?? undefined,
    hostname: row.hostname ?? undefined,
    ttl: row.ttl ?? undefined,
    permissions: parse(row.permissions),
    alertRules: parse(row.alertRules),
    ulLimit: row.ulLimit ?? undefined,
    dlLimit: row.dlLimit ?? undefined,
    ulSpeed: row.ulSpeed ?? undefined,
    dlSpeed: row.dlSpeed ?? undefined,
    storageLimit: row.storageLimit ?? undefined,
    stateLimit: row.stateLimit ?? undefined,
    deviceResources: parse(row.deviceResources),
    ...extra,
    ...(parse(row.networkPolicy ?? null) as PolicySettings | undefined),
  };
  return Object.fromEntries(Object.entries(all).filter(([, v]) => v !== undefined)) as Settings;
}

/**
 * Defaults an image may give through `io.smd.<setting>` annotations (JSON values, or plain
 * strings). Annotations that do not validate are ignored: the request can always override.
 */
export function settingsFromAnnotations(annotations: Record<string, string>): Settings {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(settingsSchema.shape)) {
    const raw = annotations[`io.smd.${key}`];
    if (raw === undefined) continue;
    let value: unknown = raw;
    try {
      value = JSON.parse(raw);
    } catch {
      /* a plain string */
    }
    const field = settingsSchema.shape[key as keyof typeof settingsSchema.shape];
    const parsed = field.safeParse(value);
    if (parsed.success && parsed.data !== undefined) out[key] = parsed.data;
  }
  return out as Settings;
}
