/**
 * The `metrics.textfile` output: the exposition written for node_exporter's textfile collector
 * (`--collector.textfile.directory`, which reads `*.prom` files). Every write is atomic (a temp
 * file in the same directory, fsync, rename, fsync of the directory: fs/atomic.ts), so a scrape
 * sees the previous text or the new one, never half of one. The temp name ends in `.tmp`, which
 * the collector does not read.
 *
 * Writes never overlap: one asked for while another runs waits and writes only the newest text.
 * A failing write (directory missing, disk full) is logged when it starts failing and when it
 * works again, not on every sample; the next sample simply tries again.
 */
import { writeFileAtomic } from '../fs/atomic.js';
import type { Logger } from '../log.js';

export class TextfileWriter {
  private running: Promise<void> | null = null;
  private pending: string | null = null;
  private lastError: string | null = null;
  private writes = 0;
  private failures = 0;

  constructor(
    readonly path: string,
    private readonly logger: Logger,
  ) {}

  /** Writes `text` (or a newer text given meanwhile); resolves once it is on disk or failed. */
  write(text: string): Promise<void> {
    this.pending = text;
    this.running ??= this.drain().finally(() => (this.running = null));
    return this.running;
  }

  /** Writes done and failed since start. */
  stats(): { writes: number; failures: number; lastError: string | null } {
    return { writes: this.writes, failures: this.failures, lastError: this.lastError };
  }

  private async drain(): Promise<void> {
    while (this.pending !== null) {
      const text = this.pending;
      this.pending = null;
      try {
        await writeFileAtomic(this.path, text, 0o644);
        this.writes++;
        if (this.lastError !== null) this.logger.info('metrics textfile written again', { path: this.path });
        this.lastError = null;
      } catch (err) {
        this.failures++;
        const message = (err as Error).message;
        if (message !== this.lastError) this.logger.warn('metrics textfile not written', { path: this.path, err });
        this.lastError = message;
      }
    }
  }
}
