export interface CheckResult {
  ok: boolean;
  detail: string;
  /** systemd: how often the bus connection was re-established since start. */
  reconnects?: number;
}

export const HEALTH_CHECKS = ['db', 'systemd', 'traffic', 'journal', 'programs', 'fleet'] as const;
export type HealthCheckName = (typeof HEALTH_CHECKS)[number];

/** Each subsystem contributes one check; `system.health` runs them all. */
export class Health {
  private readonly checks = new Map<HealthCheckName, () => CheckResult | Promise<CheckResult>>();

  register(name: HealthCheckName, check: () => CheckResult | Promise<CheckResult>): void {
    this.checks.set(name, check);
  }

  async report(): Promise<{ ok: boolean; checks: Record<HealthCheckName, CheckResult> }> {
    const entries = await Promise.all(
      HEALTH_CHECKS.map(async (name): Promise<[HealthCheckName, CheckResult]> => {
        const check = this.checks.get(name);
        if (!check) return [name, { ok: false, detail: 'not available in this build' }];
        try {
          return [name, await check()];
        } catch (err) {
          return [name, { ok: false, detail: (err as Error).message }];
        }
      }),
    );
    const checks = Object.fromEntries(entries) as Record<HealthCheckName, CheckResult>;
    return { ok: entries.every(([, c]) => c.ok), checks };
  }
}
