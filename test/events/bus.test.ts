import t from 'tap';
import { EventBus } from '../../src/events/bus.js';
import { createLogger } from '../../src/log.js';

t.test('a throwing subscriber cannot hurt the publisher or the other subscribers', async (t) => {
  const lines: string[] = [];
  const bus = new EventBus(createLogger('debug', (l) => lines.push(l)));
  const got: string[] = [];
  bus.subscribe('users', () => {
    throw new Error('listener broke');
  });
  bus.subscribe('users', (p) => got.push(p.change));
  t.doesNotThrow(() => bus.publish('users', { users: ['a'], change: 'set' }), 'publish does not throw');
  t.same(got, ['set'], 'the next subscriber still got the event');
  t.equal(lines.length, 1, 'one log line');
  t.match(lines[0], /EventBus error 'users'/);
  t.match(lines[0], /listener broke/);
});

t.test('a subscriber returning a rejected promise is logged, not unhandled', async (t) => {
  const lines: string[] = [];
  const bus = new EventBus(createLogger('debug', (l) => lines.push(l)));
  bus.subscribe('alert', (() => Promise.reject(new Error('async listener broke'))) as unknown as () => void);
  bus.publish('alert', { id: 1, serviceId: null, kind: 'k', message: 'm' });
  await new Promise((r) => setImmediate(r));
  t.equal(lines.length, 1);
  t.match(lines[0], /EventBus error 'alert'/);
  t.match(lines[0], /async listener broke/);
});

t.test('unsubscribe removes the listener', async (t) => {
  const bus = new EventBus();
  let n = 0;
  const off = bus.subscribe('traffic', () => n++);
  bus.publish('traffic', { samples: [] });
  off();
  bus.publish('traffic', { samples: [] });
  t.equal(n, 1);
  t.equal(bus.listenerCount('traffic'), 0);
});
