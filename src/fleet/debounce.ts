/**
 * A trailing debounce with a ceiling: `trigger()` runs `fn` once things have been quiet for
 * `waitMs`, but never later than `maxWaitMs` after the first trigger of a burst, so a steady
 * stream of changes still produces a report now and then. The timer functions are injected
 * (tests drive a fake clock). `fn` never runs twice at once: a trigger while it runs schedules
 * one more run after it.
 */
export interface Timers {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realTimers: Timers = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export class Debouncer {
  private timer: unknown = null;
  private firstAt: number | null = null;
  private running = false;
  private again = false;
  private closed = false;

  constructor(
    private readonly fn: () => void | Promise<void>,
    private readonly opts: { waitMs: number; maxWaitMs: number },
    private readonly timers: Timers = realTimers,
    private readonly onError: (err: unknown) => void = () => {},
  ) {}

  get pending(): boolean {
    return this.timer !== null || this.again;
  }

  trigger(): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    const now = this.timers.now();
    this.firstAt ??= now;
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    const due = Math.min(now + this.opts.waitMs, this.firstAt + this.opts.maxWaitMs);
    this.timer = this.timers.setTimeout(() => void this.fire(), Math.max(0, due - now));
  }

  /** Runs a pending call now (e.g. before a shutdown); resolves once it ran. */
  async flush(): Promise<void> {
    if (this.timer === null) return;
    this.timers.clearTimeout(this.timer);
    await this.fire();
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
  }

  private async fire(): Promise<void> {
    this.timer = null;
    this.firstAt = null;
    this.running = true;
    try {
      await this.fn();
    } catch (err) {
      this.onError(err);
    } finally {
      this.running = false;
    }
    if (this.again) {
      this.again = false;
      this.trigger();
    }
  }
}
