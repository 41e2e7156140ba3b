/** Accounting periods: totals restart at the start of each UTC minute, hour, day or month. */
export type Period = 'minute' | 'hour' | 'day' | 'month';

export function periodStart(ms: number, period: Period): number {
  const d = new Date(ms);
  switch (period) {
    case 'minute':
      return Math.floor(ms / 60_000) * 60_000;
    case 'hour':
      return Math.floor(ms / 3_600_000) * 3_600_000;
    case 'day':
      return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
    case 'month':
      return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
  }
}

export function nextPeriodStart(ms: number, period: Period): number {
  const start = periodStart(ms, period);
  const d = new Date(start);
  switch (period) {
    case 'minute':
      return start + 60_000;
    case 'hour':
      return start + 3_600_000;
    case 'day':
      return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1);
    case 'month':
      return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
  }
}
