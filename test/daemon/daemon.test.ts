import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DAEMON, startDaemon, tempDir, writeConfig } from '../helpers/daemon.js';

t.test('starts, serves both sockets with their modes, and stops in order on SIGTERM', async (t) => {
  const d = await startDaemon(t);
  t.equal(statSync(d.socket).mode & 0o777, 0o660);
  t.equal(statSync(d.readOnlySocket).mode & 0o777, 0o666);
  const c = await d.client();
  const info = await c.call<Record<string, unknown>>('system.info');
  t.match(info, { name: 'smd', pid: d.proc.pid, dbSchemaVersion: Number, servicesCount: 0, layersCount: 0, systemVersion: null });
  t.ok((info.uptimeMs as number) >= 0);
  const health = await c.call<{ checks: Record<string, { ok: boolean }> }>('system.health');
  t.equal(health.checks.db!.ok, true);
  t.same(Object.keys(health.checks).sort(), ['db', 'fleet', 'journal', 'programs', 'systemd', 'traffic']);
  t.same(health.checks.fleet, { ok: true, detail: 'disabled in the configuration' }, 'the fleet is off by default');
  t.same(await c.call('system.setVersion', { version: 12 }), { version: 12 });
  t.equal((await c.call<{ systemVersion: number }>('system.info')).systemVersion, 12);
  await t.rejects(c.call('system.setVersion', { version: 13, expectedRowVersion: 1 }), { code: 'CONFLICT' }, 'a stale rowVersion is refused');
  const tables = await c.call<{ name: string }[]>('db.tables');
  t.same(tables.map((x) => x.name), ['alerts', 'config', 'desired_state', 'fleet_outbox', 'layers', 'operation_steps', 'operations', 'service_networks', 'services', 'trafficmonitor', 'users']);
  t.match(await c.call('db.describe', { table: 'services' }), { name: 'services', columns: [{ name: 'id', type: 'TEXT', primaryKey: true }] });
  await t.rejects(c.call('db.describe', { table: 'sqlite_master' }), { code: 'NOT_FOUND' });
  const doc = await c.call<{ methods: { name: string }[] }>('rpc.discover');
  for (const m of ['system.info', 'system.health', 'system.setVersion', 'operations.list', 'operations.get', 'operations.wait', 'events.subscribe', 'events.unsubscribe', 'db.tables', 'db.describe']) {
    t.ok(doc.methods.some((x) => x.name === m), `rpc.discover lists ${m}`);
  }

  const code = await d.stop('SIGTERM');
  t.equal(code, 0, 'exit code 0 after SIGTERM');
  t.ok(d.notify.messages.some((m) => m.includes('STOPPING=1')), 'STOPPING=1 sent');
  t.notOk(existsSync(d.socket), 'socket removed');
  t.match(d.output(), /smd stopped/);
});

t.test('the read-only socket refuses every mutating method with FORBIDDEN', async (t) => {
  const d = await startDaemon(t);
  const ro = await d.client(true);
  const doc = await ro.call<{ methods: { name: string; 'x-mutating': boolean }[] }>('rpc.discover');
  const mutating = doc.methods.filter((m) => m['x-mutating']);
  t.ok(mutating.length > 0);
  for (const m of mutating) await t.rejects(ro.call(m.name, {}), { code: 'FORBIDDEN' }, `${m.name} refused`);
  t.match(await ro.call('system.info'), { name: 'smd' }, 'reads still work');
});

t.test('events.subscribe delivers operation events as notifications', async (t) => {
  // setVersion does not create an operation; subscribe and check the subscription bookkeeping.
  const d = await startDaemon(t);
  const c = await d.client();
  t.same(await c.call('events.subscribe', { topics: ['operation', 'service'] }), { subscribed: ['operation', 'service'] });
  t.same(await c.call('events.unsubscribe', { topics: ['service'] }), { subscribed: ['operation'] });
  await t.rejects(c.call('events.subscribe', { topics: ['nope'] }), { rpcCode: -32602 });
});

t.test('sd_notify: READY, STATUS and WATCHDOG keep-alives when asked', async (t) => {
  const d = await startDaemon(t, { env: { WATCHDOG_USEC: '400000' } });
  t.match(await d.notify.waitFor('READY=1'), /STATUS=serving/);
  await d.notify.waitFor('WATCHDOG=1', 2_000);
  const before = d.notify.messages.filter((m) => m === 'WATCHDOG=1').length;
  await new Promise<void>((resolve) => {
    const check = setInterval(() => {
      if (d.notify.messages.filter((m) => m === 'WATCHDOG=1').length >= before + 2) {
        clearInterval(check);
        resolve();
      }
    }, 50);
  });
  t.pass('watchdog keeps coming at half the interval');
});

t.test('a stale socket file is replaced; a live one stops the second smd', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'run'), { recursive: true });
  // A socket file whose server is gone: what a kill -9 leaves behind.
  const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(join(dir, 'run/smd.sock'))}, () => process.kill(process.pid, 'SIGKILL'))`]);
  await new Promise((r) => child.once('exit', r));
  t.ok(statSync(join(dir, 'run/smd.sock')).isSocket(), 'a dead socket file is present');
  const d = await startDaemon(t, { dir });
  const c = await d.client();
  t.match(await c.call('system.info'), { name: 'smd' });

  const second = spawnSync(process.execPath, [DAEMON, '--config', d.configPath], { encoding: 'utf8', timeout: 15_000 });
  t.not(second.status, 0, 'second smd refuses to start');
  t.match(second.stderr, /already running/);
  t.match(await c.call('system.info'), { pid: d.proc.pid }, 'the first one still serves');
});

t.test('bad configuration stops smd with a one-line reason and writes nothing', async (t) => {
  const cases: [string, string | Record<string, unknown>, RegExp][] = [
    ['not json', '{ "dataDir": ', /not valid JSON/],
    ['unknown key', { dataDir: 'X', colour: 'blue' }, /unknown key "colour"/],
    ['wrong type', { dataDir: 'X', traffic: { sampleIntervalMs: 'often' } }, /"traffic.sampleIntervalMs"/],
    ['unwritable dir', { dataDir: '/dev/null/smd' }, /dataDir \/dev\/null\/smd is not a writable directory/],
  ];
  for (const [name, content, expected] of cases) {
    const dir = tempDir(t);
    const file = join(dir, 'smd.json');
    const text = typeof content === 'string' ? content : JSON.stringify(content).replace('"X"', JSON.stringify(join(dir, 'data')));
    writeFileSync(file, text);
    const r = spawnSync(process.execPath, [DAEMON, '--config', file], { encoding: 'utf8', timeout: 15_000 });
    t.not(r.status, 0, `${name}: non-zero exit`);
    t.match(r.stderr, expected, `${name}: reason named`);
    t.equal(r.stderr.trim().split('\n').length, 1, `${name}: one line`);
    t.same(readdirSync(dir), ['smd.json'], `${name}: nothing written`);
  }
});

t.test('a corrupted database stops smd with a clear message and is not overwritten', async (t) => {
  const dir = tempDir(t);
  const configPath = writeConfig(dir);
  mkdirSync(join(dir, 'data'), { recursive: true });
  const garbage = Buffer.from('SQLite format 3\0' + 'x'.repeat(5000));
  writeFileSync(join(dir, 'data/smd.db'), garbage);
  const r = spawnSync(process.execPath, [DAEMON, '--config', configPath], { encoding: 'utf8', timeout: 15_000 });
  t.equal(r.status, 1);
  t.match(r.stderr, /database .* is unusable.*refusing to start/);
  t.same(readFileSync(join(dir, 'data/smd.db')), garbage);
});

t.test('an operation left running by a crash is failed at the next start', async (t) => {
  const dir = tempDir(t);
  const first = await startDaemon(t, { dir });
  await first.stop();
  // Simulate a crash in the middle of an operation: a row left 'running'.
  const Database = (await import('better-sqlite3')).default;
  const db = new Database(first.dbPath);
  db.prepare("INSERT INTO operations (id, kind, state, createdAt, updatedAt) VALUES ('op-1', 'services.install', 'running', 1, 1)").run();
  db.close();
  const second = await startDaemon(t, { dir });
  const c = await second.client();
  t.match(await c.call('operations.get', { id: 'op-1' }), { state: 'failed', error: { code: 'INTERNAL', message: /interrupted/ } });
  t.same(await c.call('operations.list', { state: 'running' }), []);
});
