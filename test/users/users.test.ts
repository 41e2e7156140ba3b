/** users.set switches which services run and which storage they see (real sandbox). */
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { buildExampleImages, startDaemon, tempDir } from '../helpers/daemon.js';
import { startSandbox } from '../helpers/sandbox.js';
import { canonicalUsers, usersKey } from '../../src/services/layout.js';

interface Op {
  state: string;
  error: { message: string } | null;
  result: { users: string[]; stopped: string[]; started: string[]; failed: unknown[] };
}

t.test('claims are a set; switching users stops and starts the right services with separate storage', async (t) => {
  const sb = await startSandbox(t);
  const dir = tempDir(t);
  const writer = buildExampleImages(join(dir, 'images'), ['--version', '1']).byName['writer-v1']!;
  const d = await startDaemon(t, { dir, sandbox: sb });
  const c = await d.client();

  const setA = await c.call<Op>('users.set', { users: ['driver-a', 'fleet-1'], wait: true });
  t.equal(setA.state, 'succeeded');
  t.same((await c.call<{ users: string[] }>('users.get')).users, ['driver-a', 'fleet-1']);
  const same = await c.call<Op>('users.set', { users: ['fleet-1', 'driver-a', 'fleet-1'], wait: true });
  t.same(same.result, { users: ['driver-a', 'fleet-1'], stopped: [], started: [], failed: [] }, 'the same claims in another order change nothing');

  t.equal((await c.call<Op>('services.install', { image: writer, wait: true })).state, 'succeeded');
  t.same((await c.call<{ services: string[] }>('users.get')).services, ['writer']);
  const keyA = usersKey(canonicalUsers(['driver-a', 'fleet-1']));
  const ticksA = join(d.dir, 'data/storage', keyA, 'writer/data/ticks.log');
  await waitFor(() => existsSync(ticksA) && readFileSync(ticksA, 'utf8').includes('tick 2'));

  // The state file's checksum follows the file: kept in users.stateCheckSum, announced as an event.
  const stateEvents: { change: string; serviceId?: string }[] = [];
  c.onNotification((_m, p) => stateEvents.push(p as { change: string; serviceId?: string }));
  await c.call('events.subscribe', { topics: ['users'] });
  await waitFor(() => stateEvents.some((e) => e.change === 'state' && e.serviceId === 'writer'));
  const stateFile = join(d.dir, 'data/storage', keyA, 'writer/state/state');
  t.match(readFileSync(stateFile, 'utf8'), /^ticks=\d+/);

  const toB = await c.call<Op>('users.set', { users: ['driver-b'], wait: true });
  const storedSum = () => {
    const db = new Database(d.dbPath, { readonly: true });
    const row = db.prepare('SELECT stateCheckSum FROM users WHERE users = ? AND serviceid = ?').get(canonicalUsers(['driver-a', 'fleet-1']), 'writer') as { stateCheckSum: Buffer | null };
    db.close();
    return row.stateCheckSum?.toString('hex');
  };
  const finalSum = createHash('sha256').update(readFileSync(stateFile)).digest('hex');
  await waitFor(() => storedSum() === finalSum);
  t.equal(storedSum(), finalSum, 'after the stop the checksum is that of the final state');
  t.same(toB.result.stopped, ['writer']);
  t.same(toB.result.started, []);
  t.match(await c.call('services.get', { id: 'writer' }), { state: 0 });
  t.same((await c.call<{ services: string[] }>('users.get')).services, []);
  const aWhenStopped = readFileSync(ticksA, 'utf8');

  // Installing the same version for the new users attaches it to them, with their own storage.
  const attach = await c.call<Op>('services.install', { image: writer, wait: true });
  t.equal(attach.state, 'succeeded', JSON.stringify(attach.error));
  const keyB = usersKey(canonicalUsers(['driver-b']));
  const ticksB = join(d.dir, 'data/storage', keyB, 'writer/data/ticks.log');
  await waitFor(() => existsSync(ticksB) && readFileSync(ticksB, 'utf8').includes('tick 2'));
  t.equal(readFileSync(ticksA, 'utf8'), aWhenStopped, "driver-b's writer never touched driver-a's storage");
  const linesA = aWhenStopped.split('\n').length;

  const backToA = await c.call<Op>('users.set', { users: ['fleet-1', 'driver-a'], wait: true });
  t.same(backToA.result.stopped, ['writer']);
  t.same(backToA.result.started, ['writer']);
  await waitFor(() => readFileSync(ticksA, 'utf8').split('\n').length > linesA);
  t.ok(readFileSync(ticksA, 'utf8').startsWith('v1 tick 1 '), "driver-a's storage continues where it was");
});

async function waitFor(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}
