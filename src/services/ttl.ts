import type { Operation } from '../operations/operations.js';
import type { ServiceContext } from './context.js';
import type { Removal } from './removal.js';

/** Services not used by the current users are removed once their ttl (days since the last start) passed. */
export class TtlSweeper {
  constructor(
    private readonly ctx: ServiceContext,
    private readonly removal: Removal,
  ) {}

  /** Services not used by the current users whose last start is older than their ttl. */
  expired(now = Date.now()): string[] {
    const { repo, config } = this.ctx;
    const used = repo.attachedTo(repo.currentUsers());
    return repo
      .all()
      .filter((r) => {
        if (used.has(r.id)) return false;
        const ttlDays = r.ttl ?? config.services.defaultTtlDays;
        if (ttlDays === 0) return false;
        const last = r.startat ?? r.createdAt;
        return now - last > ttlDays * 86_400_000;
      })
      .map((r) => r.id);
  }

  sweep(): Operation[] {
    return this.expired().map((id) => {
      this.ctx.logger.info('service expired (ttl)', { id });
      return this.removal.remove(id);
    });
  }
}
