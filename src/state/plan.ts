/**
 * The pure logic of the desired state (SPEC 12): its schema, its content hash, the version rule,
 * the per-service plan and the drift between it and what is installed.
 */
import { createHash } from 'node:crypto';
import * as z from 'zod';
import { SmError } from '../errors.js';
import { archiveDigest, imageSource, signatureParam } from '../layers/methods.js';
import { settingsSchema } from '../services/settings.js';

const serviceId = z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,62}$/, 'expected a service id (a-z, 0-9, _ . -, at most 63)');

export const desiredStateSchema = z
  .strictObject({
    version: z.number().int().nonnegative(),
    services: z
      .array(
        z.strictObject({
          id: serviceId,
          version: z.number().int().nonnegative(),
          image: imageSource,
          digest: archiveDigest.optional(),
          size: z.number().int().nonnegative().optional(),
          /** A sigstore bundle given beside the image, or the path of one (SPEC 13). */
          signature: signatureParam.optional(),
          settings: settingsSchema.optional(),
        }),
      )
      .max(500),
    layers: z
      .array(z.strictObject({ image: imageSource, digest: archiveDigest.optional(), size: z.number().int().nonnegative().optional(), signature: signatureParam.optional() }))
      .max(500)
      .default([]),
  })
  .superRefine((d, ctx) => {
    const seen = new Set<string>();
    d.services.forEach((s, i) => {
      if (seen.has(s.id)) ctx.addIssue({ code: 'custom', message: `service ${s.id} is listed twice`, path: ['services', i, 'id'] });
      seen.add(s.id);
    });
  });
export type DesiredState = z.output<typeof desiredStateSchema>;
export type DesiredService = DesiredState['services'][number];

/** What an apply did to one item (SPEC 12). */
export type ItemOutcome = 'installed' | 'updated' | 'unchanged' | 'removed' | 'failed' | 'rolledBack';

export interface ItemResult {
  kind: 'service' | 'layer';
  /** The service id, or the layer item's image. */
  id: string;
  outcome: ItemOutcome;
  /** Installed version before the apply (services). */
  from?: number | null;
  /** Version the item asks for (services). */
  to?: number;
  error?: string;
}

/** What is installed, as the plan and the drift need it. */
export interface InstalledService {
  id: string;
  version: number;
  /** services.state: 0 stopped, 1 running, 2 failed. */
  state: number;
  /** Whether the current users use it (only those are expected to run). */
  attached: boolean;
}

export type PlannedAction = 'install' | 'update' | 'unchanged' | 'remove';
export interface PlannedService {
  id: string;
  action: PlannedAction;
  from: number | null;
  to: number | null;
}

/** sha256 of the canonical JSON (keys sorted): the same content gives the same hash. */
export function contentHash(desired: DesiredState): string {
  return 'sha256:' + createHash('sha256').update(canonicalJson(desired)).digest('hex');
}

export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

/**
 * The version rule against the last apply that succeeded: the same version with the same content
 * is `unchanged` (nothing to do); a lower version, or the same version with other content, is
 * CONFLICT unless `force` (with force the state is applied in full, which also repairs drift).
 */
export function checkVersion(last: { version: number; hash: string } | null, version: number, hash: string, force: boolean): 'apply' | 'unchanged' {
  if (!last) return 'apply';
  if (version === last.version && hash === last.hash) return force ? 'apply' : 'unchanged';
  if (force) return 'apply';
  if (version < last.version) {
    throw new SmError('CONFLICT', `desired state version ${version} is lower than the applied version ${last.version} (pass force to apply it anyway)`, { applied: last.version, requested: version });
  }
  if (version === last.version) {
    throw new SmError('CONFLICT', `desired state version ${version} is already applied with other content; give it a new version (or pass force)`, { applied: last.version, requested: version });
  }
  return 'apply';
}

/**
 * Per service what the apply does: a missing one is installed, another version is updated (a
 * lower one too: the desired state is the whole truth, its own version is the guard), the same
 * version is unchanged, and an installed service the state does not list is removed (last).
 * Settings are applied with an install or update; a changed setting alone is not an update.
 */
export function planServices(desired: readonly Pick<DesiredService, 'id' | 'version'>[], installed: readonly Pick<InstalledService, 'id' | 'version'>[]): PlannedService[] {
  const have = new Map(installed.map((s) => [s.id, s]));
  const wanted = new Set(desired.map((s) => s.id));
  const plan: PlannedService[] = desired.map((s) => {
    const cur = have.get(s.id);
    if (!cur) return { id: s.id, action: 'install', from: null, to: s.version };
    return { id: s.id, action: cur.version === s.version ? 'unchanged' : 'update', from: cur.version, to: s.version };
  });
  for (const s of [...installed].sort((a, b) => (a.id < b.id ? -1 : 1))) if (!wanted.has(s.id)) plan.push({ id: s.id, action: 'remove', from: s.version, to: null });
  return plan;
}

/**
 * A difference between the desired state and the device now:
 * - `missing`: a desired service is not installed (e.g. removed by hand); `expected` its version;
 * - `version`: installed in another version (`expected` / `actual`);
 * - `notRunning`: installed, used by the current users, but `actual` is `stopped` or `failed`;
 * - `unexpected`: installed and not in the desired state (`actual` its version);
 * - `layerMissing`: a layer the desired state installed is no longer stored (`id` its digest).
 */
export interface Drift {
  kind: 'service' | 'layer';
  id: string;
  issue: 'missing' | 'version' | 'notRunning' | 'unexpected' | 'layerMissing';
  expected: unknown;
  actual: unknown;
}

const STATE_NAMES = ['stopped', 'running', 'failed'];

export function computeDrift(desired: Pick<DesiredState, 'services'> | null, installed: readonly InstalledService[], layers: { digests: readonly string[]; has: (d: string) => boolean } = { digests: [], has: () => true }): Drift[] {
  if (!desired) return [];
  const drift: Drift[] = [];
  const have = new Map(installed.map((s) => [s.id, s]));
  const wanted = new Set(desired.services.map((s) => s.id));
  for (const s of desired.services) {
    const cur = have.get(s.id);
    if (!cur) drift.push({ kind: 'service', id: s.id, issue: 'missing', expected: s.version, actual: null });
    else if (cur.version !== s.version) drift.push({ kind: 'service', id: s.id, issue: 'version', expected: s.version, actual: cur.version });
    else if (cur.attached && cur.state !== 1) drift.push({ kind: 'service', id: s.id, issue: 'notRunning', expected: 'running', actual: STATE_NAMES[cur.state] ?? cur.state });
  }
  for (const s of installed) if (!wanted.has(s.id)) drift.push({ kind: 'service', id: s.id, issue: 'unexpected', expected: null, actual: s.version });
  for (const d of layers.digests) if (!layers.has(d)) drift.push({ kind: 'layer', id: d, issue: 'layerMissing', expected: 'stored', actual: null });
  return drift;
}
