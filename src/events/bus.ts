import { EventEmitter } from 'node:events';

/** Every event smd publishes, by topic. Clients subscribe to topics through `events.subscribe`. */
export interface EventMap {
  operation: { id: string; kind: string; target: string | null; state: string; progress: number; step: string | null; error: { code: string; message: string } | null };
  service: { id: string; state: number; status: number; activeState?: string; subState?: string; reason?: string };
  alert: { id: number; serviceId: string | null; kind: string; message: string };
  traffic: { samples: unknown[] };
  users: { users: string[]; change: string; serviceId?: string };
}
export type Topic = keyof EventMap;
export const TOPICS: readonly Topic[] = ['operation', 'service', 'alert', 'traffic', 'users'];

/** The one typed event bus. Managers publish; RPC subscriptions listen. */
export class EventBus {
  private readonly emitter = new EventEmitter();

  constructor() {
    // Each RPC subscriber adds a listener; hundreds of clients are normal, not a leak.
    this.emitter.setMaxListeners(0);
  }

  publish<T extends Topic>(topic: T, payload: EventMap[T]): void {
    this.emitter.emit(topic, payload);
  }

  /** Returns the function that removes the listener. */
  subscribe<T extends Topic>(topic: T, listener: (payload: EventMap[T]) => void): () => void {
    this.emitter.on(topic, listener);
    return () => this.emitter.off(topic, listener);
  }

  listenerCount(topic: Topic): number {
    return this.emitter.listenerCount(topic);
  }
}
