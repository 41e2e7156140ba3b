/**
 * The fleet bridge against a real Mosquitto (TLS with the test CA, a password file) in the
 * sandbox, with the real smd: a retained desired state published before smd starts is applied
 * and reported; a newer one while an apply runs wins after it and an older one is refused; `rpc`
 * answers read-only calls on `rpc/reply` with the id and refuses mutating ones; malformed
 * payloads are reported and ignored; the broker killed: events and the report wait in the
 * outbox (bounded: oldest events dropped, the report kept), survive an smd restart, and arrive
 * in order once it is back; `online` is retained and the last will sets it false on SIGKILL;
 * a wrong password shows in the health check.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { buildExampleImages, SMCTL, startDaemon, tempDir } from '../helpers/daemon.js';
import { startMosquitto, type Received } from '../helpers/mosquitto.js';
import { startSandbox } from '../helpers/sandbox.js';
import { makeTestCa } from '../helpers/test-ca.js';

const run = promisify(execFile);

interface Report {
  desiredVersion: number | null;
  status: { state: string; code?: string; operationId?: string };
  appliedVersion: number | null;
  refused: { version: number | null; code: string; message: string } | null;
  services: { id: string; version: number; state: number; status: number }[];
  layers: string[];
  users: string[];
  system: { smd: string; uptimeMs: number };
  time: number;
}
interface FleetEvent {
  id: number;
  time: number;
  type: string;
  data: Record<string, unknown>;
}
interface FleetStatus {
  connection: string;
  desired: { version: number | null; state: string };
  outbox: { depth: number; event: number; report: number; dropped: number };
}

const json = <T>(m: Received) => JSON.parse(m.text) as T;

t.test('fleet bridge over a real broker', async (t) => {
  const sb = await startSandbox(t);
  const dir = tempDir(t);
  const ca = await makeTestCa(join(dir, 'ca'));
  const broker = await startMosquitto(t, sb, dir, ca);
  const img = buildExampleImages(join(dir, 'images')).byName;
  const base = 'smd/dev1';
  const topic = (n: string) => `${base}/${n}`;
  const passwordFile = join(dir, 'smd-password');
  writeFileSync(passwordFile, `${broker.password}\n`, { mode: 0o600 });
  const fleet = {
    url: `mqtts://127.0.0.1:${broker.tlsPort}`,
    deviceId: 'dev1',
    username: broker.user,
    passwordFile,
    ca: ca.caCert,
    reconnect: { minMs: 200, maxMs: 1500 },
    report: { debounceMs: 100, maxWaitMs: 500 },
    outbox: { maxMessages: 25 },
  };
  const daemonDir = join(dir, 'smd');
  mkdirSync(daemonDir);
  const smctl = async (d: { socket: string }, args: string[]) => (await run(process.execPath, [SMCTL, '--socket', d.socket, ...args], { timeout: 20_000 })).stdout;

  const svc = (id: string, version: number, image: string) => ({ id, version, image });
  const desired = (version: number, services: ReturnType<typeof svc>[]) => JSON.stringify({ version, services, layers: [] });
  const v1 = desired(1, [svc('hello-http', 1, img['hello-http-v1']!)]);
  const v2 = desired(2, [svc('hello-http', 2, img['hello-http-v2']!)]);
  const v3 = desired(3, [svc('hello-http', 2, img['hello-http-v2']!), svc('ticker', 1, img['writer-v1']!)]);

  const watch = await broker.client([`${base}/#`]);
  const reports = () => watch.messages.filter((m) => m.topic === topic('reported'));
  const waitReport = (pred: (r: Report) => boolean, what: string, timeoutMs = 60_000) =>
    watch.waitFor((m) => m.topic === topic('reported') && pred(json<Report>(m)), timeoutMs, what).then((m) => json<Report>(m));
  const events = () => watch.messages.filter((m) => m.topic === topic('events')).map((m) => json<FleetEvent>(m));

  // (1) A retained desired state published before smd starts is applied at connect.
  await watch.publish(topic('desired'), v1, { retain: true });
  let d = await startDaemon(t, { dir: daemonDir, sandbox: sb, config: { fleet } });
  let c = await d.client();
  // On failure, the daemon's and the broker's logs say why.
  t.teardown(() => {
    if (!t.passing()) console.error(`--- smd output (tail) ---\n${d.output().slice(-6000)}\n--- mosquitto ---\n${broker.output().slice(-3000)}`);
  });
  await watch.waitFor((m) => m.topic === topic('online') && m.text === 'true', 20_000, 'online true');
  const r1 = await waitReport((r) => r.desiredVersion === 1 && r.status.state === 'applied' && r.services.some((s) => s.id === 'hello-http' && s.state === 1), 'v1 applied and reported');
  const list1 = await c.call<{ id: string; version: number; state: number; status: number }[]>('services.list');
  t.same(r1.services, list1.map((s) => ({ id: s.id, version: s.version, state: s.state, status: s.status })), 'reported matches services.list');
  t.match(await c.call('state.get'), { applied: { version: 1, state: 'succeeded' } }, 'and state.get');
  t.equal(r1.appliedVersion, 1);
  t.same(r1.layers.sort(), (await c.call<{ digest: string }[]>('layers.list')).map((l) => l.digest).sort(), 'layers as layers.list');
  t.match(r1.system, { smd: /\d+\.\d+\.\d+/ });
  const fresh = await broker.client([topic('online'), topic('reported')]);
  const retainedOnline = await fresh.waitFor((m) => m.topic === topic('online'), 5000, 'retained online');
  t.same([retainedOnline.text, retainedOnline.retain], ['true', true], 'online is retained true');
  t.equal((await fresh.waitFor((m) => m.topic === topic('reported'), 5000, 'retained report')).retain, true, 'reported is retained');
  await fresh.close();

  // (2) A newer desired state while one runs wins after it; an older one is refused.
  await watch.publish(topic('desired'), v2, { retain: true });
  await watch.publish(topic('desired'), v3, { retain: true });
  await watch.publish(topic('desired'), v1.replace('"version":1', '"version":0'), { retain: true });
  const r3 = await waitReport((r) => r.desiredVersion === 3 && r.status.state === 'applied', 'v3 applied');
  t.match(r3.refused, { version: 0, code: 'CONFLICT' }, 'the older one is reported refused');
  t.same(r3.services.map((s) => [s.id, s.version, s.state]).sort(), [['hello-http', 2, 1], ['ticker', 1, 1]]);
  const applies = (await c.call<{ kind: string; target: string; state: string }[]>('operations.list')).filter((o) => o.kind === 'state.apply');
  t.same(applies.map((o) => [o.target, o.state]).reverse(), [['v1', 'succeeded'], ['v2', 'succeeded'], ['v3', 'succeeded']], 'v2 ran, then v3 after it; v0 never started');
  t.ok(events().some((e) => e.type === 'desired' && e.data.state === 'refused' && e.data.version === 0), 'the refusal is an event too');
  // Older than the applied version with nothing running: state.apply's own CONFLICT.
  await watch.publish(topic('desired'), v2, { retain: true });
  await waitReport((r) => r.refused?.version === 2 && r.refused.code === 'CONFLICT' && r.desiredVersion === 3, 'v2 refused after v3');
  // A malformed desired state is reported and ignored.
  await watch.publish(topic('desired'), '{"version": "three"', { retain: true });
  await waitReport((r) => r.refused?.code === 'INVALID' && r.refused.version === null, 'malformed desired refused');
  await watch.publish(topic('desired'), '{"version": 4, "services": [{"id": "../x"}]}', { retain: true });
  await waitReport((r) => r.refused?.version === 4 && r.refused.code === 'INVALID', 'schema-invalid desired refused');
  await watch.publish(topic('desired'), v3, { retain: true }); // the same v3 again: a no-op

  // (3) rpc: read-only calls answered with their id; mutations refused; garbage answered.
  const reply = (id: unknown) => watch.waitFor((m) => m.topic === topic('rpc/reply') && (JSON.parse(m.text) as { id: unknown }).id === id, 15_000, `reply ${String(id)}`).then((m) => JSON.parse(m.text) as { id: unknown; result?: unknown; error?: { code: number; data?: { code?: string } } });
  await watch.publish(topic('rpc'), JSON.stringify({ jsonrpc: '2.0', id: 'q1', method: 'services.list' }));
  t.match(((await reply('q1')).result as { id: string }[]).map((s) => s.id).sort(), ['hello-http', 'ticker']);
  await watch.publish(topic('rpc'), JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'services.logs', params: { id: 'hello-http', lines: 5 } }));
  t.ok(Array.isArray(((await reply(7)).result as { entries: unknown[] }).entries), 'services.logs answers');
  await watch.publish(topic('rpc'), JSON.stringify({ jsonrpc: '2.0', id: 'm1', method: 'services.stop', params: { id: 'hello-http' } }));
  t.match(await reply('m1'), { error: { code: -32000, data: { code: 'FORBIDDEN' } } }, 'a mutating method is refused');
  t.equal((await c.call<{ live: { activeState: string } }>('services.get', { id: 'hello-http' })).live.activeState, 'active', 'and did nothing');
  for (const garbage of ['not json', '[]', '{"jsonrpc":"2.0"}', '\u00ff\u00fe', '{"jsonrpc":"2.0","id":{"x":1},"method":"a"}', JSON.stringify({ jsonrpc: '2.0', id: 'big', method: 'x'.repeat(5000) })]) {
    await watch.publish(topic('rpc'), garbage);
  }
  await watch.publish(topic('rpc'), JSON.stringify({ jsonrpc: '2.0', id: 'after', method: 'system.info' }));
  t.match(await reply('after'), { result: { name: 'smd' } }, 'still answering after garbage');
  t.ok(watch.messages.some((m) => m.topic === topic('rpc/reply') && /"code":-32700/.test(m.text)), 'a parse error was answered');

  // (4) The broker is killed: events and reports wait in the outbox, bounded; they survive an smd
  //     restart; delivered in order once the broker is back.
  await broker.kill();
  const until = async (what: string, pred: () => Promise<boolean>, timeoutMs = 15_000) => {
    const end = Date.now() + timeoutMs;
    while (!(await pred())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100)); // poll interval of a bounded wait
    }
  };
  await until('the bridge sees the broker gone', async () => (await c.call<FleetStatus>('fleet.status')).connection !== 'connected');
  const seenBefore = events().length;
  for (let i = 0; i < 16; i++) {
    await c.call('services.stop', { id: 'hello-http' });
    await c.call('services.start', { id: 'hello-http' });
  }
  await c.call('services.stop', { id: 'ticker' });
  const status = JSON.parse(await smctl(d, ['--json', 'fleet'])) as FleetStatus;
  t.match(status, { connection: /connecting|disconnected/, outbox: { depth: 25, report: 1 } }, 'smctl fleet shows the outbox at its bound, with the report');
  t.ok(status.outbox.dropped > 0, `the bound dropped the oldest events (${status.outbox.dropped})`);
  t.match(await smctl(d, ['fleet']), /outbox:\s+25 \(1 report/);
  const health = await c.call<{ checks: { fleet: { ok: boolean; detail: string } } }>('system.health');
  t.match(health.checks.fleet, { ok: false, detail: /not connected to mqtts:\/\/127\.0\.0\.1/ }, 'health says the fleet is not connected');
  // smd restarted while the broker is down: the outbox survives.
  t.equal(await d.stop(), 0);
  d = await startDaemon(t, { dir: daemonDir, sandbox: sb, config: { fleet } });
  c = await d.client();
  const survived = await c.call<FleetStatus>('fleet.status');
  t.match(survived, { outbox: { report: 1 } }, 'the outbox survived the restart, with a report');
  t.ok(survived.outbox.depth >= status.outbox.depth, `and all its messages (${survived.outbox.depth} >= ${status.outbox.depth})`);
  // Hold smd still while the broker comes back and the test subscribes, so nothing is missed.
  process.kill(d.proc.pid!, 'SIGSTOP');
  await broker.start();
  const back = await broker.client([`${base}/#`]);
  process.kill(d.proc.pid!, 'SIGCONT');
  const afterReport = await back.waitFor((m) => m.topic === topic('reported') && (json<Report>(m).services.find((s) => s.id === 'ticker')?.state ?? 1) === 0, 30_000, 'the report after the return');
  t.ok(afterReport, 'the latest report arrived (ticker stopped, hello-http running)');
  t.equal(json<Report>(afterReport).services.find((s) => s.id === 'hello-http')?.state, 1);
  await until('the outbox drained', async () => (await c.call<FleetStatus>('fleet.status')).outbox.depth === 0, 20_000);
  const delivered = back.messages.filter((m) => m.topic === topic('events')).map((m) => json<FleetEvent>(m));
  const ids = [...new Set(delivered.map((e) => e.id))];
  t.same(ids, [...ids].sort((a, b) => a - b), 'events arrive in order (duplicates aside)');
  t.ok(delivered.length >= 20, `the events that fit the bound arrived (${delivered.length})`);
  const offline = delivered.filter((e) => e.type === 'service');
  t.ok(offline.some((e) => e.data.id === 'ticker' && e.data.state === 0), 'the newest offline event (ticker stopped) was kept');
  t.ok(Math.min(...ids) > Math.max(...events().slice(0, seenBefore).map((e) => e.id)) - 32, 'only what was in flight at the cut may come again');
  t.match(await c.call<{ checks: { fleet: { ok: boolean } } }>('system.health'), { checks: { fleet: { ok: true } } });

  // (5) The last will: smd SIGKILLed, `online` becomes false (retained).
  await back.waitFor((m) => m.topic === topic('online') && m.text === 'true', 10_000, 'online true again');
  await d.stop('SIGKILL');
  await back.waitFor((m) => m.topic === topic('online') && m.text === 'false', 15_000, 'online false by the last will');
  const after = await broker.client([topic('online')]);
  t.match(await after.waitFor((m) => m.topic === topic('online'), 5000, 'retained online'), { text: 'false', retain: true }, 'online is retained false');

  // (6) A wrong password: the health check says why.
  writeFileSync(passwordFile, 'wrong-password\n');
  d = await startDaemon(t, { dir: daemonDir, sandbox: sb, config: { fleet } });
  c = await d.client();
  await until('the refusal shows', async () => (await c.call<{ checks: { fleet: { detail: string } } }>('system.health')).checks.fleet.detail.includes('refused user'));
  const wrong = await c.call<{ ok: boolean; checks: { fleet: { ok: boolean; detail: string } } }>('system.health');
  t.match(wrong.checks.fleet, { ok: false, detail: /Not authorized|Bad user name or password/ }, wrong.checks.fleet.detail);
  t.match(wrong.checks.fleet.detail, /check fleet\.username and fleet\.passwordFile/);
  t.match(await smctl(d, ['fleet']), /connection:\s+(connecting|disconnected)/);
});
