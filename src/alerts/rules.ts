/**
 * Alert rules: the `alertRules` setting of a service, and their evaluation. Pure: no I/O, the
 * caller passes the time.
 *
 * Format (a JSON array, at most 100 rules):
 *
 *   [{ "metric": "memory", "above": 67108864, "forMs": 30000, "rearmBelow": 50331648 }]
 *
 * - `metric`: what is compared, in these units:
 *     memory  bytes (MemoryCurrent)          cpu     percent of one CPU over the last sample
 *     storage bytes used in the storage folder   state  bytes of the state file
 *     upload  bytes uploaded in the current traffic period
 *     download bytes downloaded in the current traffic period
 * - `above`: the threshold; the rule fires when the value is strictly above it ...
 * - `forMs` (default 0): ... continuously for at least this long (measured between samples:
 *   the first sample above starts the clock; a sample at or below resets it).
 * - `rearmBelow` (default `above`): after firing, the rule stays silent until the value is
 *   strictly below this; it must be <= `above` (hysteresis).
 * - `id` (optional): a name for the rule, echoed in the alert; default `<metric>>above`.
 *
 * One crossing gives exactly one alert. A missing value (null: metric not available) neither
 * fires, nor resets the clock, nor re-arms.
 */
import * as z from 'zod';

export const METRICS = ['memory', 'cpu', 'storage', 'state', 'upload', 'download'] as const;
export type Metric = (typeof METRICS)[number];

export const alertRuleSchema = z
  .strictObject({
    id: z.string().min(1).max(100).optional(),
    metric: z.enum(METRICS),
    above: z.number().nonnegative().finite(),
    forMs: z.number().int().nonnegative().max(7 * 24 * 3600_000).default(0),
    rearmBelow: z.number().nonnegative().finite().optional(),
  })
  .refine((r) => r.rearmBelow === undefined || r.rearmBelow <= r.above, { message: 'rearmBelow must be <= above', path: ['rearmBelow'] });

export const alertRulesSchema = z.array(alertRuleSchema).max(100);

export type AlertRuleInput = z.input<typeof alertRuleSchema>;
export interface AlertRule {
  id: string;
  metric: Metric;
  above: number;
  forMs: number;
  rearmBelow: number;
}

/** Validates and normalises rules (defaults filled in); throws a ZodError on bad input. */
export function parseAlertRules(value: unknown): AlertRule[] {
  return alertRulesSchema.parse(value).map((r) => ({
    id: r.id ?? `${r.metric}>${r.above}`,
    metric: r.metric,
    above: r.above,
    forMs: r.forMs,
    rearmBelow: r.rearmBelow ?? r.above,
  }));
}

/** Rules from the `alertRules` column (JSON text or null); invalid rules are reported, not thrown. */
export function rulesFromColumn(text: string | null): { rules: AlertRule[]; error: string | null } {
  if (text === null || text === '') return { rules: [], error: null };
  try {
    return { rules: parseAlertRules(JSON.parse(text)), error: null };
  } catch (err) {
    const msg = err instanceof z.ZodError ? z.prettifyError(err) : (err as Error).message;
    return { rules: [], error: msg };
  }
}

/** Where one rule stands: armed and waiting (since = first sample above), or fired (waiting for rearm). */
export interface RuleState {
  /** ms when the value first went above `above` in the current run, null when not above. */
  aboveSince: number | null;
  fired: boolean;
}

export interface Firing {
  rule: AlertRule;
  value: number;
  /** ms the value has been above the threshold. */
  durationMs: number;
}

export type Values = Partial<Record<Metric, number | null>>;

/**
 * Evaluates rules against one sample; mutates `states` (keyed by rule id) and returns the rules
 * that fire now. State of rules no longer present is dropped.
 */
export function evaluateRules(rules: readonly AlertRule[], values: Values, now: number, states: Map<string, RuleState>): Firing[] {
  const out: Firing[] = [];
  const seen = new Set<string>();
  for (const rule of rules) {
    seen.add(rule.id);
    let st = states.get(rule.id);
    if (!st) states.set(rule.id, (st = { aboveSince: null, fired: false }));
    const v = values[rule.metric];
    if (v === null || v === undefined || !Number.isFinite(v)) continue;
    if (st.fired) {
      if (v < rule.rearmBelow) {
        st.fired = false;
        st.aboveSince = null;
      } else continue;
    }
    if (v > rule.above) {
      st.aboveSince ??= now;
      if (now - st.aboveSince >= rule.forMs) {
        st.fired = true;
        out.push({ rule, value: v, durationMs: now - st.aboveSince });
      }
    } else {
      st.aboveSince = null;
    }
  }
  for (const id of [...states.keys()]) if (!seen.has(id)) states.delete(id);
  return out;
}
