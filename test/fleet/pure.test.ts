/** The fleet bridge's pure parts: topic names, backoff, the outbox drop policy, the debounce. */
import t from 'tap';
import Database from 'better-sqlite3';
import { drizzle } from 'drizzle-orm/better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backoffDelay } from '../../src/fleet/backoff.js';
import { Debouncer, type Timers } from '../../src/fleet/debounce.js';
import { dropPlan, Outbox } from '../../src/fleet/outbox.js';
import { fleetTopics } from '../../src/fleet/topics.js';
import { errorInfo, hintFor } from '../../src/fleet/bridge.js';
import { applyMigrations, type Db } from '../../src/db/database.js';
import { parseConfig } from '../../src/config/config.js';

t.test('topics live under <topicPrefix>/<deviceId>/', async (t) => {
  const tp = fleetTopics('smd', 'dev-1');
  t.same([tp.desired, tp.reported, tp.events, tp.online, tp.rpc, tp.rpcReply], ['smd/dev-1/desired', 'smd/dev-1/reported', 'smd/dev-1/events', 'smd/dev-1/online', 'smd/dev-1/rpc', 'smd/dev-1/rpc/reply']);
  t.equal(fleetTopics('acme/site-3', 'gw.7').desired, 'acme/site-3/gw.7/desired');
  t.equal(tp.nameOf('smd/dev-1/rpc/reply'), 'rpc/reply');
  t.equal(tp.nameOf('smd/dev-1/desired/x'), null);
  t.equal(tp.nameOf('smd/dev-10/desired'), null);
  for (const bad of ['a/b', '+', '#', '', 'x y', 'a#']) t.throws(() => fleetTopics('smd', bad), `deviceId ${JSON.stringify(bad)}`);
  for (const bad of ['/smd', 'smd/', 'a//b', 'smd/+', '#']) t.throws(() => fleetTopics(bad, 'd'), `prefix ${JSON.stringify(bad)}`);
});

t.test('config: off by default, validated when present', async (t) => {
  t.equal(parseConfig({}).fleet, undefined);
  const c = parseConfig({ fleet: { url: 'mqtts://broker.example:8883', deviceId: 'd1' } }).fleet!;
  t.match(c, { enabled: true, topicPrefix: 'smd', allowMutations: false, reconnect: { minMs: 1000, maxMs: 60000 }, outbox: { maxMessages: 10000 } });
  t.throws(() => parseConfig({ fleet: { url: 'http://x:1', deviceId: 'd1' } }), /fleet\.url/);
  t.throws(() => parseConfig({ fleet: { url: 'mqtt://x:1', deviceId: 'a/b' } }), /fleet\.deviceId/);
  t.throws(() => parseConfig({ fleet: { url: 'mqtt://x:1', deviceId: 'd', password: 'x' } }), /unknown key "fleet\.password"/);
  t.throws(() => parseConfig({ fleet: { url: 'mqtt://x:1', deviceId: 'd', passwordFile: 'rel' } }), /fleet\.passwordFile/);
  t.throws(() => parseConfig({ fleet: { url: 'mqtt://x:1', deviceId: 'd', reconnect: { minMs: 10, maxMs: 5 } } }), /fleet\.reconnect/);
});

t.test('backoff: exponential, capped, jittered within [cap/2, cap]', async (t) => {
  const o = { minMs: 1000, maxMs: 60_000 };
  t.same([0, 1, 2, 3].map((n) => backoffDelay(n, o, () => 0.999999)), [1000, 2000, 4000, 8000]);
  t.same([0, 1, 2, 3].map((n) => backoffDelay(n, o, () => 0)), [500, 1000, 2000, 4000]);
  t.equal(backoffDelay(20, o, () => 0.999999), 60_000, 'capped at maxMs');
  t.equal(backoffDelay(1e9, o, () => 0), 30_000, 'huge attempt counts stay capped');
  // A crowd of 500 devices at attempt 3 spreads over [4 s, 8 s] and does not cluster.
  let seed = 42;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const delays = Array.from({ length: 500 }, () => backoffDelay(3, o, rnd));
  t.ok(delays.every((d) => d >= 4000 && d <= 8000));
  const perSecond = new Map<number, number>();
  for (const d of delays) perSecond.set(Math.floor(d / 1000), (perSecond.get(Math.floor(d / 1000)) ?? 0) + 1);
  t.ok(Math.max(...perSecond.values()) < 200, `no second gets most of the crowd: ${JSON.stringify([...perSecond])}`);
});

t.test('drop policy: oldest events first, then replies, the report never', async (t) => {
  t.same(dropPlan({ report: 1, event: 5, reply: 2 }, 10), { events: 0, replies: 0 });
  t.same(dropPlan({ report: 1, event: 5, reply: 2 }, 6), { events: 2, replies: 0 });
  t.same(dropPlan({ report: 1, event: 5, reply: 2 }, 2), { events: 5, replies: 1 });
  t.same(dropPlan({ report: 1, event: 5, reply: 2 }, 1), { events: 5, replies: 2 });
  t.same(dropPlan({ report: 1, event: 0, reply: 0 }, 1), { events: 0, replies: 0 });
});

function outboxDb(t: Tap.Test): Db {
  const dir = mkdtempSync(join(tmpdir(), 'smd-outbox-'));
  const sqlite = new Database(join(dir, 'o.db'));
  applyMigrations(sqlite);
  t.teardown(() => (sqlite.close(), rmSync(dir, { recursive: true, force: true })));
  return drizzle(sqlite) as unknown as Db;
}

t.test('outbox in SQLite: order, one report, bound, delivery', async (t) => {
  const ob = new Outbox(outboxDb(t), { maxMessages: 4 });
  ob.enqueue('event', 'events', '{"n":1}');
  ob.enqueue('report', 'reported', '{"r":1}', true);
  ob.enqueue('event', 'events', '{"n":2}');
  ob.enqueue('reply', 'rpc/reply', '{"id":"a"}');
  t.same(ob.next(0, 10).map((m) => m.payload), ['{"n":1}', '{"r":1}', '{"n":2}', '{"id":"a"}']);
  // A newer report replaces the waiting one; the bound then drops the oldest event.
  ob.enqueue('report', 'reported', '{"r":2}', true);
  ob.enqueue('event', 'events', '{"n":3}');
  ob.enqueue('event', 'events', '{"n":4}');
  const rows = ob.next(0, 10);
  t.same(rows.map((m) => m.payload), ['{"id":"a"}', '{"r":2}', '{"n":3}', '{"n":4}']);
  t.match(ob.stats(), { depth: 4, report: 1, event: 2, reply: 1, dropped: 2 });
  t.equal(rows.find((r) => r.kind === 'report')!.retain, true);
  // Ids increase: sending resumes after the last one sent; delivery deletes.
  t.same(ob.next(rows[1]!.id, 10).map((m) => m.payload), ['{"n":3}', '{"n":4}']);
  for (const r of rows) ob.delivered(r.id);
  ob.delivered(rows[0]!.id); // twice: a no-op
  t.equal(ob.stats().depth, 0);
  // Flooded with events, the report stays.
  ob.enqueue('report', 'reported', '{"r":3}', true);
  for (let i = 0; i < 20; i++) ob.enqueue('event', 'events', `{"n":${10 + i}}`);
  t.same(ob.next(0, 10).map((m) => m.payload), ['{"r":3}', '{"n":27}', '{"n":28}', '{"n":29}']);
});

class FakeTimers implements Timers {
  t = 0;
  private seq = 0;
  private readonly due = new Map<number, { at: number; fn: () => void }>();
  now = () => this.t;
  setTimeout = (fn: () => void, ms: number) => {
    const id = ++this.seq;
    this.due.set(id, { at: this.t + ms, fn });
    return id;
  };
  clearTimeout = (h: unknown) => void this.due.delete(h as number);
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      const next = [...this.due.entries()].filter(([, v]) => v.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!next) break;
      this.due.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
      await new Promise((r) => setImmediate(r));
    }
    this.t = end;
  }
}

t.test('debounce: quiet period, a ceiling for steady streams, flush', async (t) => {
  const clock = new FakeTimers();
  const runs: number[] = [];
  const d = new Debouncer(() => void runs.push(clock.now()), { waitMs: 100, maxWaitMs: 300 }, clock);
  d.trigger();
  await clock.advance(50);
  d.trigger();
  await clock.advance(99);
  t.same(runs, [], 'postponed while triggers keep coming');
  await clock.advance(1);
  t.same(runs, [150]);
  // A trigger every 50 ms: the ceiling makes it run 300 ms after the first of the burst.
  for (let i = 0; i < 10; i++) {
    d.trigger();
    await clock.advance(50);
  }
  // Triggers at 150..600: the ceiling of the burst that began at 150 makes it run at 450.
  t.same(runs, [150, 450], 'runs at the ceiling during a steady stream');
  await clock.advance(200);
  t.same(runs, [150, 450, 700], 'and once more when it went quiet (last trigger 600 + 100)');
  d.trigger();
  await d.flush();
  t.equal(runs.length, 4, 'flush runs the pending call now');
  await clock.advance(1000);
  t.equal(runs.length, 4, 'and nothing is left pending');
  d.close();
  d.trigger();
  await clock.advance(1000);
  t.equal(runs.length, 4, 'closed: no more runs');
});

t.test('errors: codes for the report, hints for the operator', async (t) => {
  t.same(errorInfo(Object.assign(new Error('old'), { code: 'CONFLICT' })), { code: 'CONFLICT', message: 'old' });
  t.same(errorInfo(Object.assign(new Error('bad'), { code: -32602 })), { code: 'INVALID', message: 'bad' });
  t.match(hintFor({ code: 5 }, { url: 'mqtt://b:1', username: 'dev' }), /refused user dev: check fleet.username and fleet.passwordFile/);
  t.match(hintFor({ code: 'ECONNREFUSED' }, { url: 'mqtt://b:1' }), /is the broker running/);
  t.match(hintFor({ code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' }, { url: 'mqtts://b:1' }), /set fleet.ca/);
});
