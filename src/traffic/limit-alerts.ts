/**
 * The alert of a crossed traffic limit: stored and published through AlertStore (source
 * `traffic`, kind `traffic.limit`), once per chain and period, also across restarts.
 */
import type { AlertStore } from '../alerts/store.js';
import type { Period } from './period.js';
import type { TrafficRow } from './types.js';

export const LIMIT_ALERT = 'traffic.limit';

/** The operator's sentence for a crossed limit (pure). */
export function limitMessage(row: TrafficRow, period: Period): string {
  const what = row.direction === 'in' ? 'download' : 'upload';
  return `service ${row.serviceId}: ${what} limit of ${row.limit} bytes per ${period} reached (${row.bytes} bytes); ${what} blocked until the next period`;
}

export function limitPayload(row: TrafficRow): Record<string, unknown> {
  return { chain: row.chain, direction: row.direction, bytes: row.bytes, limit: row.limit, periodStart: row.periodStart };
}

/**
 * Stores and publishes the alert of `row`'s crossing unless this chain was already told in this
 * period (before a restart). Returns whether it alerted.
 */
export function alertLimit(alerts: AlertStore, row: TrafficRow, period: Period, now: number): boolean {
  if (row.serviceId === null) return false;
  const told = alerts.list({ source: 'traffic', serviceId: row.serviceId, since: row.periodStart }).some((a) => a.kind === LIMIT_ALERT && a.payload.chain === row.chain);
  if (told) return false;
  alerts.add([{ time: now, source: 'traffic', serviceId: row.serviceId, kind: LIMIT_ALERT, message: limitMessage(row, period), payload: limitPayload(row) }]);
  return true;
}
