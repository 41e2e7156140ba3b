import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../../src/db/database.js';
import { EventBus } from '../../src/events/bus.js';
import { SmError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { Operations } from '../../src/operations/operations.js';

function setup(t: { teardown(fn: () => void): void }) {
  const dir = mkdtempSync(join(tmpdir(), 'smd-ops-'));
  const path = join(dir, 'smd.db');
  const opened = openDatabase(path);
  t.teardown(() => {
    opened.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const bus = new EventBus();
  const events: { id: string; state: string; progress: number; step: string | null }[] = [];
  bus.subscribe('operation', (e) => events.push(e));
  return { path, opened, bus, events, ops: new Operations(opened.db, bus, silentLogger) };
}

t.test('a successful operation records steps, progress, result and events', async (t) => {
  const { ops, events } = setup(t);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const op = ops.start({
    kind: 'test.install',
    target: 'svc',
    inputs: { image: '/x' },
    work: async (h) => {
      h.step('read');
      h.progress(40.7);
      h.progress(40.2);
      await gate;
      h.step('write', 'writing unit');
      return { installed: true };
    },
  });
  t.equal(op.state, 'running');
  t.equal(ops.get(op.id).progress, 40);
  release();
  const done = await ops.wait(op.id, 5_000);
  t.equal(done.state, 'succeeded');
  t.equal(done.progress, 100);
  t.same(done.result, { installed: true });
  t.same(
    ops.steps(op.id).map((s) => [s.name, s.state, s.message]),
    [
      ['read', 'succeeded', null],
      ['write', 'succeeded', 'writing unit'],
    ],
  );
  const mine = events.filter((e) => e.id === op.id);
  t.same([...new Set(mine.map((e) => e.state))], ['running', 'succeeded']);
  t.equal(mine.filter((e) => e.progress === 40 && e.step === 'read').length, 1, 'an unchanged percent publishes nothing');
});

t.test('a failing operation keeps the error code and message and fails its step', async (t) => {
  const { ops } = setup(t);
  const op = ops.start({
    kind: 'test.fail',
    work: async (h) => {
      h.step('start');
      throw new SmError('SYSTEMD', 'unit failed: exit-code', { status: 3 });
    },
  });
  const done = await ops.wait(op.id, 5_000);
  t.equal(done.state, 'failed');
  t.same(done.error, { code: 'SYSTEMD', message: 'unit failed: exit-code', details: { status: 3 } });
  t.match(ops.steps(op.id), [{ name: 'start', state: 'failed', message: 'unit failed: exit-code' }]);
});

t.test('operations with one lock key run one after the other', async (t) => {
  const { ops } = setup(t);
  const order: string[] = [];
  let releaseFirst!: () => void;
  const first = ops.start({ kind: 'k', lockKey: 'svc', work: () => new Promise<void>((r) => (releaseFirst = () => (order.push('first'), r()))) });
  const second = ops.start({ kind: 'k', lockKey: 'svc', work: async () => void order.push('second') });
  t.equal(second.state, 'pending');
  t.equal(ops.get(second.id).state, 'pending');
  releaseFirst();
  await ops.wait(second.id, 5_000);
  t.same(order, ['first', 'second']);
  t.equal(ops.get(first.id).state, 'succeeded');
});

t.test('wait returns the running operation when the timeout passes first', async (t) => {
  const { ops } = setup(t);
  let release!: () => void;
  const op = ops.start({ kind: 'slow', work: () => new Promise<void>((r) => (release = r)) });
  const started = Date.now();
  const seen = await ops.wait(op.id, 100);
  t.equal(seen.state, 'running');
  t.ok(Date.now() - started >= 90);
  release();
  await ops.drain();
  await t.rejects(ops.wait('no-such-id', 10), { code: 'NOT_FOUND' });
});

t.test('operations left running by a crash are failed at the next start', async (t) => {
  const { ops, path, opened } = setup(t);
  const op = ops.start({ kind: 'crashy', work: (h) => (h.step('half'), new Promise(() => {})) });
  // A second connection, as after a restart: nothing in memory, only the database.
  const reopened = openDatabase(path);
  t.teardown(() => reopened.close());
  const after = new Operations(reopened.db, new EventBus(), silentLogger);
  const failed = after.failInterrupted();
  t.same(failed.map((o) => o.id), [op.id]);
  t.match(after.get(op.id), { state: 'failed', error: { code: 'INTERNAL', message: /interrupted/ } });
  t.match(after.steps(op.id), [{ name: 'half', state: 'failed' }]);
  t.same(after.failInterrupted(), [], 'nothing left to fail');
  void opened;
});

t.test('retention deletes old finished operations beyond the newest ones, with their steps', async (t) => {
  const { ops, opened } = setup(t);
  const made: string[] = [];
  for (let i = 0; i < 5; i++) {
    const op = ops.start({ kind: 'k', work: async (h) => void h.step('only') });
    await ops.wait(op.id, 5_000);
    made.push(op.id);
  }
  let release!: () => void;
  const running = ops.start({ kind: 'k', work: () => new Promise<void>((r) => (release = r)) });
  const day = 86_400_000;
  // Make the first four look 40 days old (createdAt keeps their order).
  for (const [i, id] of made.slice(0, 4).entries()) opened.sqlite.prepare('UPDATE operations SET createdAt = ?, updatedAt = ? WHERE id = ?').run(i, Date.now() - 40 * day, id);
  const deleted = ops.prune({ keep: 2, maxAgeMs: 30 * day });
  t.equal(deleted, 4, 'old finished operations beyond the newest two are gone');
  t.same(ops.list().map((o) => o.id).sort(), [made[4], running.id].sort());
  t.equal((opened.sqlite.prepare('SELECT count(*) AS n FROM operation_steps').get() as { n: number }).n, 1, 'their steps went with them');
  release();
  await ops.drain();
});
