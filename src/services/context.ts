import type { Config } from '../config/config.js';
import { isSmError } from '../errors.js';
import type { EventBus } from '../events/bus.js';
import type { ImageSources } from '../images/sources.js';
import type { LayerStore } from '../layers/store.js';
import type { KeyedLock } from '../lock.js';
import type { Logger } from '../log.js';
import type { Operations } from '../operations/operations.js';
import type { SystemdAdapter } from '../systemd/types.js';
import type { HostProvisioning } from './host.js';
import type { ServiceLayout } from './layout.js';
import type { ServiceRepository } from './repository.js';
import type { ServiceNetworking } from './types.js';

/** What the parts of the services domain share; built once by ServiceManager from its deps. */
export interface ServiceContext {
  config: Config;
  repo: ServiceRepository;
  layout: ServiceLayout;
  host: HostProvisioning;
  systemd: SystemdAdapter;
  layers: LayerStore;
  sources: ImageSources;
  operations: Operations;
  bus: EventBus;
  logger: Logger;
  networking: ServiceNetworking | undefined;
  locks: KeyedLock;
}

/** The users lock: every service action holds it shared, the users switch exclusively. */
export const USERS_LOCK = 'users';

/**
 * Runs `fn` for one service: under the users lock (shared) and the service's own lock, with the
 * current users read once, so that they cannot change in the middle of the action.
 */
export function withService<T>(ctx: ServiceContext, id: string, fn: (users: string) => Promise<T>): Promise<T> {
  return ctx.locks.shared(USERS_LOCK, () => ctx.locks.run(`service:${id}`, () => fn(ctx.repo.currentUsers())));
}

/** The service's own lock alone (for actions that do not depend on the users, e.g. removal). */
export function withServiceOnly<T>(ctx: ServiceContext, id: string, fn: () => Promise<T>): Promise<T> {
  return ctx.locks.run(`service:${id}`, fn);
}

/** A unit systemd does not know (never loaded or already gone). */
export function isUnknownUnit(err: unknown): boolean {
  // The adapter maps NoSuchUnit to NOT_FOUND; the regex covers adapters that do not.
  if (isSmError(err, 'NOT_FOUND')) return true;
  return /NoSuchUnit|not loaded/i.test(JSON.stringify((err as { details?: unknown } | null)?.details ?? {}) + String((err as Error | null)?.message ?? ''));
}

/**
 * A `.catch` handler for a best-effort systemd call: a unit systemd does not know is what was
 * expected; anything else is logged (never swallowed silently).
 */
export function ignoreUnknownUnit(ctx: Pick<ServiceContext, 'logger'>, what: string, fields: Record<string, unknown> = {}): (err: unknown) => void {
  return (err) => {
    if (!isUnknownUnit(err)) ctx.logger.warn(`${what} failed`, { ...fields, err });
  };
}
