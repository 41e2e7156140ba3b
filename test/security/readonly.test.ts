/**
 * The read-only socket (mode 0666, any local user) must not change anything. Complements
 * test/daemon/daemon.test.ts (which refuses every method rpc.discover marks x-mutating) with:
 * an explicit classification of every registered method, so a new method, or one whose
 * `mutating` flag is wrong, fails here until someone decided which it is; refusal with valid
 * params (so the refusal is not just a params error); batches and notifications; and proof that
 * nothing changed afterwards.
 */
import t from 'tap';
import { createConnection, type Socket } from 'node:net';
import { join } from 'node:path';
import { startDaemon } from '../helpers/daemon.js';

/** Methods that change state: refused on the read-only socket. */
const MUTATING = [
  'layers.install',
  'layers.prune',
  'layers.remove',
  'services.configure',
  'services.install',
  'services.remove',
  'services.restart',
  'services.start',
  'services.stop',
  'state.apply',
  'system.setVersion',
  'users.set',
];
/** Methods that only read (events.* only change the calling connection's own subscriptions). */
const READING = [
  'alerts.list',
  'db.describe',
  'db.tables',
  'events.subscribe',
  'events.unsubscribe',
  'layers.get',
  'layers.list',
  'metrics.get',
  'fleet.status',
  'monitoring.get',
  'operations.get',
  'operations.list',
  'operations.wait',
  'rpc.discover',
  'services.get',
  'services.list',
  'services.logs',
  'state.get',
  'system.health',
  'system.info',
  'traffic.get',
  'users.get',
];

/** Params that pass validation for each mutating method, so only the socket can refuse them. */
const VALID_PARAMS = (dir: string): Record<string, Record<string, unknown>> => ({
  'layers.install': { image: join(dir, 'nothing.tar') },
  'layers.prune': {},
  'layers.remove': { digest: `sha256:${'0'.repeat(64)}` },
  'services.configure': { id: 'svc', settings: { ttl: 1 } },
  'services.install': { image: join(dir, 'nothing.tar'), id: 'svc', version: 1 },
  'services.remove': { id: 'svc' },
  'state.apply': { desired: { version: 1, services: [], layers: [] } },
  'services.restart': { id: 'svc' },
  'services.start': { id: 'svc' },
  'services.stop': { id: 'svc' },
  'system.setVersion': { version: 4242 },
  'users.set': { users: ['intruder'] },
});

interface RpcErrorLike {
  code?: string;
  rpcCode?: number;
}

function raw(path: string) {
  const socket: Socket = createConnection(path);
  const lines: unknown[] = [];
  let buf = '';
  socket.on('data', (d) => {
    buf += d.toString();
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(buf.slice(0, nl)));
      buf = buf.slice(nl + 1);
    }
  });
  socket.on('error', () => {});
  return {
    lines,
    send: (s: string) => socket.write(s),
    async waitLines(n: number, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (lines.length < n) {
        if (Date.now() > deadline) throw new Error(`got ${lines.length} of ${n} replies`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return lines;
    },
    close: () => socket.destroy(),
  };
}

t.test('read-only socket: every registered method is classified, every mutating one refused', async (t) => {
  const d = await startDaemon(t);
  const ro = await d.client(true);
  const rw = await d.client(false);
  const doc = await ro.call<{ methods: { name: string; 'x-mutating': boolean }[] }>('rpc.discover');
  const registered = doc.methods.map((m) => m.name).sort();
  t.same(registered, [...MUTATING, ...READING].sort(), 'every registered method is classified in this test (add new ones to MUTATING or READING)');
  t.same(
    doc.methods.filter((m) => m['x-mutating']).map((m) => m.name).sort(),
    [...MUTATING].sort(),
    'x-mutating in rpc.discover is exactly the methods that change state',
  );

  // The control socket does accept a change (so the refusals below are the socket's doing).
  t.same(await rw.call('system.setVersion', { version: 7 }), { version: 7 });
  const before = {
    info: await rw.call<{ systemVersion: unknown; servicesCount: number; layersCount: number }>('system.info'),
    users: await rw.call('users.get'),
    ops: (await rw.call<unknown[]>('operations.list')).length,
  };
  const valid = VALID_PARAMS(d.dir);
  for (const m of MUTATING) {
    await t.rejects(ro.call(m, {}), { code: 'FORBIDDEN' }, `${m} with empty params: FORBIDDEN`);
    await t.rejects(ro.call(m, valid[m]), { code: 'FORBIDDEN' }, `${m} with valid params: FORBIDDEN`);
    await t.rejects(ro.call(m, { ...valid[m], wait: true }), { code: 'FORBIDDEN' }, `${m} with wait: FORBIDDEN`);
  }
  // Reads are never refused for being on this socket (they may be refused for their params).
  for (const m of READING) {
    const err = await ro.call(m, {}).then(
      () => null,
      (e: RpcErrorLike) => e,
    );
    t.not(err?.code, 'FORBIDDEN', `${m} is allowed on the read-only socket`);
  }

  // Batches and notifications (no id, so no reply) are refused as well, item by item.
  const r = raw(d.readOnlySocket);
  const batch = MUTATING.map((m, i) => ({ jsonrpc: '2.0', id: i, method: m, params: valid[m] }));
  r.send(JSON.stringify([...batch, { jsonrpc: '2.0', id: 'info', method: 'system.info' }]) + '\n');
  const [replies] = (await r.waitLines(1)) as { id: number | string; error?: { data?: { code?: string } }; result?: unknown }[][];
  t.equal(replies!.length, MUTATING.length + 1, 'one reply per batch item');
  for (const rep of replies!) {
    if (rep.id === 'info') t.ok(rep.result, 'the read in the batch is answered');
    else t.equal(rep.error?.data?.code, 'FORBIDDEN', `batch item ${MUTATING[rep.id as number]}: FORBIDDEN`);
  }
  for (const m of MUTATING) r.send(JSON.stringify({ jsonrpc: '2.0', method: m, params: valid[m] }) + '\n');
  r.send(JSON.stringify({ jsonrpc: '2.0', id: 'last', method: 'system.info' }) + '\n');
  const after = (await r.waitLines(2))[1] as { id: string; result: { systemVersion: unknown; servicesCount: number; layersCount: number } };
  t.equal(after.id, 'last', 'notifications got no reply');
  r.close();

  t.same(after.result.systemVersion, before.info.systemVersion, 'system version unchanged');
  t.equal(after.result.servicesCount, before.info.servicesCount, 'no service appeared');
  t.equal(after.result.layersCount, before.info.layersCount, 'no layer appeared');
  t.same(await rw.call('users.get'), before.users, 'users unchanged');
  t.equal((await rw.call<unknown[]>('operations.list')).length, before.ops, 'no operation was started from the read-only socket');
});
