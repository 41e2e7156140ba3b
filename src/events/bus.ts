import { EventEmitter } from 'node:events';
import { createLogger, type Logger } from '../log.js';

/** Every event smd publishes, by topic. Clients subscribe to topics through `events.subscribe`. */
export interface EventMap {
  operation: { id: string; kind: string; target: string | null; state: string; progress: number; step: string | null; error: { code: string; message: string } | null; transfer?: { bytesDone: number; bytesTotal: number } };
  service: { id: string; state: number; status: number; activeState?: string; subState?: string; reason?: string };
  alert: { id: number; serviceId: string | null; kind: string; message: string };
  traffic: { samples: unknown[] };
  users: { users: string[]; change: string; serviceId?: string };
}
export type Topic = keyof EventMap;
export const TOPICS: readonly Topic[] = ['operation', 'service', 'alert', 'traffic', 'users'];

/**
 * The one typed event bus. Managers publish; RPC subscriptions listen. Listeners cannot hurt the
 * publisher: each runs guarded, and what it throws (or rejects with) is logged as
 * `EventBus error '<topic>'`, never thrown into `publish`.
 */
export class EventBus {
  private readonly emitter = new EventEmitter();
  private readonly log: Logger;

  constructor(logger?: Logger) {
    this.log = logger ?? createLogger('error', (l) => process.stderr.write(l + '\n'));
    // Each RPC subscriber adds a listener; hundreds of clients are normal, not a leak.
    this.emitter.setMaxListeners(0);
  }

  publish<T extends Topic>(topic: T, payload: EventMap[T]): void {
    this.emitter.emit(topic, payload);
  }

  /** Returns the function that removes the listener. */
  subscribe<T extends Topic>(topic: T, listener: (payload: EventMap[T]) => void): () => void {
    const guarded = (payload: EventMap[T]) => {
      try {
        const r = listener(payload) as unknown;
        if (r instanceof Promise) r.catch((err: unknown) => this.listenerFailed(topic, err));
      } catch (err) {
        this.listenerFailed(topic, err);
      }
    };
    this.emitter.on(topic, guarded);
    return () => this.emitter.off(topic, guarded);
  }

  private listenerFailed(topic: Topic, err: unknown): void {
    try {
      this.log.error(`EventBus error '${topic}'`, { err });
    } catch {
      // a logger that throws must not reach the publisher either
    }
  }

  listenerCount(topic: Topic): number {
    return this.emitter.listenerCount(topic);
  }
}
