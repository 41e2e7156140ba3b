/**
 * Reconnect delays (SPEC 14): exponential with jitter, so that a fleet of devices that lost the
 * same broker does not come back in lock-step. "Equal jitter": the delay of attempt n is uniform
 * in [cap/2, cap] with cap = min(maxMs, minMs * 2^n), so it never drops to zero (no hammering
 * of a broker that refuses us) and still spreads a crowd over half the window. Pure.
 */
export interface BackoffOptions {
  minMs: number;
  maxMs: number;
}

/** The delay before reconnect attempt `attempt` (0 = the first after a loss); `random` in [0, 1). */
export function backoffDelay(attempt: number, opts: BackoffOptions, random: () => number = Math.random): number {
  const exp = Math.min(Math.max(0, Math.floor(attempt)), 30);
  const cap = Math.min(opts.maxMs, opts.minMs * 2 ** exp);
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.round(cap / 2 + (cap / 2) * r);
}
