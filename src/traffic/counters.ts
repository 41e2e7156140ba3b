/**
 * The total of one chain for the current period, from kernel counters that may be reset at any
 * time (chain re-created, counters zeroed, reboot): total = base + (counter - offset), never
 * going backwards. All BigInt.
 */
export interface ChainTotal {
  /** Bytes accounted before `offset` was taken (stored value, or totals before a reset). */
  base: bigint;
  /** The counter value that corresponds to `base`. */
  offset: bigint;
  /** The last counter seen, null before the first sample. */
  last: bigint | null;
  periodStart: number;
}

export function startTotal(stored: bigint, periodStart: number): ChainTotal {
  return { base: stored, offset: 0n, last: null, periodStart };
}

export function totalOf(s: ChainTotal): bigint {
  return s.last === null ? s.base : s.base + (s.last - s.offset);
}

/**
 * One sample of the counter. A new period starts from 0 at the current counter; the first sample
 * continues from the stored base; a counter lower than the last seen one was reset, so the total
 * continues from where it was plus what the fresh counter holds.
 */
export function observe(s: ChainTotal, counter: bigint, periodStart: number): ChainTotal {
  if (periodStart !== s.periodStart) return { base: 0n, offset: counter, last: counter, periodStart };
  if (s.last === null) return { ...s, offset: counter, last: counter };
  if (counter < s.last) return { base: totalOf(s), offset: 0n, last: counter, periodStart };
  return { ...s, last: counter };
}

/** smd re-created the chain itself: its counter restarts at 0, the total carries on. */
export function rebase(s: ChainTotal): ChainTotal {
  return { base: totalOf(s), offset: 0n, last: 0n, periodStart: s.periodStart };
}
