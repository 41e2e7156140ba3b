/** The one per-key lock: exclusive and shared holders, in order of arrival. */
import t from 'tap';
import { KeyedLock } from '../src/lock.js';

const gate = () => {
  let open!: () => void;
  const p = new Promise<void>((r) => (open = r));
  return { p, open };
};

t.test('exclusive holders of one key run one after the other; other keys do not wait', async (t) => {
  const lock = new KeyedLock();
  const order: string[] = [];
  const g = gate();
  const a = lock.run('k', async () => (await g.p, order.push('a')));
  const b = lock.run('k', async () => order.push('b'));
  await lock.run('other', async () => order.push('other'));
  t.ok(lock.busy('k'));
  g.open();
  await Promise.all([a, b]);
  t.same(order, ['other', 'a', 'b']);
  t.notOk(lock.busy('k'), 'a free key is forgotten');
});

t.test('shared holders run together, never beside an exclusive one', async (t) => {
  const lock = new KeyedLock();
  const events: string[] = [];
  const g1 = gate();
  const s1 = lock.shared('u', async () => (events.push('s1+'), await g1.p, events.push('s1-')));
  const s2 = lock.shared('u', async () => events.push('s2'));
  const x = lock.run('u', async () => events.push('x'));
  const s3 = lock.shared('u', async () => events.push('s3'));
  await s2;
  t.same(events, ['s1+', 's2'], 'a second shared holder does not wait for the first');
  g1.open();
  await Promise.all([s1, x, s3]);
  t.same(events, ['s1+', 's2', 's1-', 'x', 's3'], 'the exclusive one waits for both, a later shared one for it');
});

t.test('a throwing holder does not block the key', async (t) => {
  const lock = new KeyedLock();
  await t.rejects(lock.run('k', async () => { throw new Error('boom'); }));
  t.equal(await lock.run('k', async () => 1), 1);
});
