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
  /** The kernel counter persisted with the stored base, if known: where a restart resumes. */
  resume: bigint | null;
}

export function startTotal(stored: bigint, periodStart: number, storedCounter: bigint | null = null): ChainTotal {
  return { base: stored, offset: 0n, last: null, periodStart, resume: storedCounter };
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
  if (periodStart !== s.periodStart) return { base: 0n, offset: counter, last: counter, periodStart, resume: null };
  if (s.last === null) {
    // After a restart: bytes the kernel counted since the last persist still count (the chain
    // survived smd); a lower counter means it was reset meanwhile, so all of it is new.
    const offset = s.resume === null ? counter : counter >= s.resume ? s.resume : 0n;
    return { ...s, offset, last: counter };
  }
  if (counter < s.last) return { base: totalOf(s), offset: 0n, last: counter, periodStart, resume: null };
  return { ...s, last: counter };
}

/** smd re-created the chain itself: its counter restarts at 0, the total carries on. */
export function rebase(s: ChainTotal): ChainTotal {
  return { base: totalOf(s), offset: 0n, last: 0n, periodStart: s.periodStart, resume: null };
}
