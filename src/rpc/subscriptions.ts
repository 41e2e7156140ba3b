import * as z from 'zod';
import { TOPICS, type EventBus, type Topic } from '../events/bus.js';
import { SmError } from '../errors.js';
import { defineMethod, type ConnectionHandle, type MethodSpec } from './registry.js';

const topicsParam = z.strictObject({ topics: z.array(z.enum(TOPICS as [Topic, ...Topic[]])).min(1) });

/**
 * `events.subscribe` / `unsubscribe`: a connection receives `event` notifications
 * `{topic, ...payload}` for its topics until it unsubscribes or closes.
 */
export function subscriptionMethods(bus: EventBus): MethodSpec<any, any>[] {
  const byConnection = new Map<number, Map<Topic, () => void>>();

  const subscriptionsOf = (conn: ConnectionHandle | undefined) => {
    if (!conn) throw new SmError('FORBIDDEN', 'subscriptions need a connection');
    let subs = byConnection.get(conn.id);
    if (!subs) {
      const created = new Map<Topic, () => void>();
      subs = created;
      byConnection.set(conn.id, created);
      conn.onClose(() => {
        for (const off of created.values()) off();
        byConnection.delete(conn.id);
      });
    }
    return subs;
  };

  return [
    defineMethod({
      name: 'events.subscribe',
      summary: 'Receive `event` notifications for these topics on this connection',
      params: topicsParam,
      mutating: false,
      handler: (p, ctx) => {
        const subs = subscriptionsOf(ctx.connection);
        for (const topic of p.topics) {
          if (subs.has(topic)) continue;
          subs.set(
            topic,
            bus.subscribe(topic, (payload) => ctx.connection!.notify('event', { topic, ...payload })),
          );
        }
        return { subscribed: [...subs.keys()] };
      },
    }),
    defineMethod({
      name: 'events.unsubscribe',
      summary: 'Stop `event` notifications for these topics on this connection',
      params: topicsParam,
      mutating: false,
      handler: (p, ctx) => {
        const subs = subscriptionsOf(ctx.connection);
        for (const topic of p.topics) {
          subs.get(topic)?.();
          subs.delete(topic);
        }
        return { subscribed: [...subs.keys()] };
      },
    }),
  ];
}
