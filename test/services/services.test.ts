/** Services end to end on a real systemd, D-Bus, journald and overlayfs inside a sandbox. */
import t from 'tap';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { buildExampleImages, ROOT, startDaemon, tempDir, type RunningDaemon } from '../helpers/daemon.js';
import { startSandbox, type Sandbox } from '../helpers/sandbox.js';
import type { RpcClient } from '../../src/cli/client.js';

interface Op {
  id: string;
  state: string;
  error: { code: string; message: string } | null;
  result: unknown;
}
interface Svc {
  id: string;
  version: number;
  state: number;
  status: number;
  unit: string;
  uid: number;
  layers: string[];
  rowVersion: number;
  live?: { activeState: string; subState: string; mainPid: number | null; restarts: number | null } | null;
}

/** GET the hello-http page at the service's own address on smd's bridge. */
async function fetchPage(sb: Sandbox): Promise<string> {
  const { address } = await c.call<{ address: string }>('services.get', { id: 'hello-http' });
  return sb.run(process.execPath, [join(ROOT, 'scripts/http-get.mjs'), `http://${address}:8080/`], { timeoutMs: 10_000 });
}

/** Waits (bounded) until a `service` event for `id` satisfies `pred`. */
function serviceEvent(c: RpcClient, id: string, pred: (e: { state: number; status: number; activeState?: string }) => boolean, timeoutMs = 5_000) {
  return new Promise<{ state: number; status: number; activeState?: string; at: number }>((resolve, reject) => {
    const timer = setTimeout(() => (off(), reject(new Error(`no matching service event for ${id} within ${timeoutMs} ms`))), timeoutMs);
    const off = c.onNotification((_m, p) => {
      const e = p as { topic: string; id: string; state: number; status: number; activeState?: string };
      if (e.topic === 'service' && e.id === id && pred(e)) {
        clearTimeout(timer);
        off();
        resolve({ ...e, at: Date.now() });
      }
    });
  });
}

let sb: Sandbox;
let d: RunningDaemon;
let c: RpcClient;
let img: Record<string, string>;

t.before(async () => {
  sb = await startSandbox(t);
  const dir = tempDir(t);
  img = buildExampleImages(join(dir, 'images')).byName;
  d = await startDaemon(t, { dir, sandbox: sb });
  c = await d.client();
  await c.call('events.subscribe', { topics: ['service', 'operation'] });
});

t.test('health sees systemd and the journal', async (t) => {
  type Health = { checks: Record<string, { ok: boolean; detail: string }> };
  let h = await c.call<Health>('system.health');
  t.equal(h.checks.systemd!.ok, true, h.checks.systemd!.detail);
  // The journal follower starts right after READY=1: give it a bounded moment.
  for (let i = 0; i < 200 && !h.checks.journal!.ok; i++) {
    await new Promise((r) => setTimeout(r, 25));
    h = await c.call<Health>('system.health');
  }
  t.equal(h.checks.journal!.ok, true, h.checks.journal!.detail);
});

t.test('install runs the service sandboxed from its image, as its own uid', async (t) => {
  const op = await c.call<Op>('services.install', { image: img['hello-http-v1'], wait: true });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  const svc = await c.call<Svc>('services.get', { id: 'hello-http' });
  t.match(svc, { id: 'hello-http', version: 1, state: 1, status: 0, unit: 'smd-hello-http.service' });
  t.equal(svc.live?.activeState, 'active');
  t.ok(svc.live?.mainPid);
  t.ok(svc.uid >= 5000 && svc.uid <= 9999);
  t.match(await fetchPage(sb), /version 1</, 'the page is served from the overlay root');
  const status = await sb.run('cat', [`/proc/${svc.live!.mainPid}/status`]);
  t.match(status, new RegExp(`^Uid:\\s+${svc.uid}\\s`, 'm'), 'runs as its own uid');
  t.match(status, /^NoNewPrivs:\s+1$/m);
  t.match(status, /^CapBnd:\s+0+$/m, 'no capabilities');
  const unitText = await sb.run('cat', [join(sb.unitDir, 'smd-hello-http.service')]);
  t.match(unitText, /RootDirectory=/);
  t.match(unitText, /ProtectSystem=strict/);
  t.match((await c.call<Svc[]>('services.list')).map((s) => s.id), ['hello-http']);
});

t.test('the service has its own network with traffic accounting', async (t) => {
  const svc = await c.call<{ address: string }>('services.get', { id: 'hello-http' });
  t.match(svc.address, /^172\.30\.\d+\.\d+$/);
  const rows = await c.call<{ serviceId: string | null; direction: string; bytes: number; blocked: boolean }[]>('traffic.get', { serviceId: 'hello-http' });
  t.same(rows.map((r) => r.direction).sort(), ['in', 'out']);
  t.ok(rows.every((r) => r.serviceId === 'hello-http' && r.bytes >= 0 && !r.blocked));
  const unitText = await sb.run('cat', [join(sb.unitDir, 'smd-hello-http.service')]);
  t.match(unitText, /NetworkNamespacePath=\/run\/netns\/smd-/);
  const health = await c.call<{ checks: { traffic: { ok: boolean; detail: string } } }>('system.health');
  t.equal(health.checks.traffic.ok, true, health.checks.traffic.detail);
});

t.test('stop and start resolve when systemd is done; state follows', async (t) => {
  const stopped = await c.call<Svc>('services.stop', { id: 'hello-http' });
  t.equal(stopped.state, 0);
  t.equal((await c.call<Svc>('services.get', { id: 'hello-http' })).live?.activeState, 'inactive');
  const started = await c.call<Svc>('services.start', { id: 'hello-http' });
  t.equal(started.state, 1);
  t.match(await fetchPage(sb), /version 1</);
  const restarted = await c.call<Svc>('services.restart', { id: 'hello-http' });
  t.equal(restarted.state, 1);
});

t.test('a crash is seen as failed within a second, from D-Bus signals', async (t) => {
  const before = await c.call<Svc>('services.get', { id: 'hello-http' });
  const failed = serviceEvent(c, 'hello-http', (e) => e.state === 2, 3_000);
  const killedAt = Date.now();
  await sb.run('kill', ['-KILL', String(before.live!.mainPid)]);
  const ev = await failed;
  t.ok(ev.at - killedAt < 1_000, `failed after ${ev.at - killedAt} ms`);
  // Restart=on-failure brings it back.
  await serviceEvent(c, 'hello-http', (e) => e.state === 1, 10_000);
  t.match(await fetchPage(sb), /version 1</);
});

t.test('update to a higher version; a lower one is CONFLICT', async (t) => {
  const op = await c.call<Op>('services.install', { image: img['hello-http-v2'], wait: true });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  t.match(await c.call<Svc>('services.get', { id: 'hello-http' }), { version: 2, state: 1 });
  t.match(await fetchPage(sb), /version 2</);
  const layers = await c.call<{ digest: string; usedBy: string[] }[]>('layers.list');
  t.equal(layers.length, 2, 'the old app layer was pruned, the shared base kept');
  await t.rejects(c.call('services.install', { image: img['hello-http-v1'], id: 'hello-http', version: 1 }), { code: 'CONFLICT' });
});

t.test('an update that does not stay active is rolled back to the running previous version', async (t) => {
  const op = await c.call<Op>('services.install', { image: img['failing-v1'], id: 'hello-http', version: 3, wait: true });
  t.equal(op.state, 'failed');
  t.match(op.error?.message, /version 2 was restored/);
  const svc = await c.call<Svc>('services.get', { id: 'hello-http' });
  t.match(svc, { version: 2, state: 1 });
  t.equal(svc.live?.activeState, 'active');
  t.match(await fetchPage(sb), /version 2</);
});

t.test('a service whose start fails is not installed and leaves nothing behind', async (t) => {
  const op = await c.call<Op>('services.install', { image: img['failing-v1'], wait: true });
  t.equal(op.state, 'failed');
  t.match(op.error?.message, /failing/);
  await t.rejects(c.call('services.get', { id: 'failing' }), { code: 'NOT_FOUND' });
  t.notOk(existsSync(join(sb.unitDir, 'smd-failing.service')), 'no unit file');
  t.notOk(existsSync(join(d.dir, 'data/services/failing')), 'no service directory');
  const missing = await c.call<Op>('services.install', { image: join(d.dir, 'nope.tar'), wait: true });
  t.equal(missing.state, 'failed');
  t.ok(missing.error?.message);
});

t.test('two installs of one id at once: one after the other, never both half-done', async (t) => {
  const [a, b] = await Promise.all([
    c.call<Op>('services.install', { image: img['writer-v1'], wait: true }),
    c.call<Op>('services.install', { image: img['writer-v2'], wait: true }),
  ]);
  // Whichever read its image first installs; the other waits, then updates (v2) or is refused (v1 after v2).
  t.equal(b.state, 'succeeded', 'v2 installs or updates');
  t.ok(a.state === 'succeeded' || a.error?.code === 'CONFLICT', `v1: ${a.state} ${a.error?.code ?? ''}`);
  t.match(await c.call('services.get', { id: 'writer' }), { version: 2, state: 1 });

  const [installed, removed] = await Promise.all([
    c.call<Op>('services.install', { image: img['writer-v1'], id: 'writer', version: 1, force: true, wait: true }),
    c.call<Op>('services.remove', { id: 'writer', wait: true }),
  ]);
  t.equal(removed.state, 'succeeded');
  t.equal(installed.state, 'succeeded');
  // Either order is fine; what is left is whole: installed and running, or gone without a trace.
  const left = await c.call<Svc>('services.get', { id: 'writer' }).catch(() => null);
  if (left) {
    t.match(left, { version: 1, state: 1 });
    t.ok(existsSync(join(sb.unitDir, 'smd-writer.service')));
    t.equal((await c.call<Op>('services.remove', { id: 'writer', wait: true })).state, 'succeeded');
  } else {
    t.notOk(existsSync(join(sb.unitDir, 'smd-writer.service')));
  }
});

t.test('logs come from the journal with a cursor to continue', async (t) => {
  const op = await c.call<Op>('services.install', { image: img['writer-v1'], wait: true });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  let logs = { entries: [] as { message: string; time: number; priority: number }[], cursor: null as string | null };
  const deadline = Date.now() + 10_000;
  while (logs.entries.length < 2 && Date.now() < deadline) {
    logs = await c.call('services.logs', { id: 'writer', lines: 50 });
    if (logs.entries.length < 2) await new Promise((r) => setTimeout(r, 200));
  }
  t.ok(logs.entries.length >= 2, `got ${logs.entries.length} entries`);
  t.ok(logs.cursor);
  t.ok(logs.entries.every((e) => e.time > 0 && typeof e.message === 'string'));
  const more = await c.call<{ entries: unknown[]; cursor: string }>('services.logs', { id: 'writer', cursor: logs.cursor! });
  t.ok(more.entries.length < 50, 'continuing from the cursor does not repeat old entries');
});

t.test('configure with expectedRowVersion; remove is complete and idempotent', async (t) => {
  const svc = await c.call<Svc>('services.get', { id: 'writer' });
  const changed = await c.call<Svc & { settings: { memoryMax?: number; ttl?: number } }>('services.configure', { id: 'writer', settings: { memoryMax: 64 * 1024 * 1024, ttl: 7 }, expectedRowVersion: svc.rowVersion });
  t.equal(changed.rowVersion, svc.rowVersion + 1);
  t.equal(changed.settings.memoryMax, 64 * 1024 * 1024);
  await t.rejects(c.call('services.configure', { id: 'writer', settings: { ttl: 8 }, expectedRowVersion: svc.rowVersion }), { code: 'CONFLICT' });
  t.match(await sb.run('cat', [join(sb.unitDir, 'smd-writer.service')]), /MemoryMax=67108864/);

  // storageLimit: /data becomes a file system of that size; writing past it fails, nothing else is harmed.
  const limited = await c.call<Svc & { settings: { storageLimit?: number } }>('services.configure', { id: 'writer', settings: { storageLimit: 2 * 1024 * 1024 } });
  t.equal(limited.settings.storageLimit, 2 * 1024 * 1024);
  const dataDirs = (await sb.run('cat', ['/proc/self/mountinfo'])).split('\n').filter((l) => / \/[^ ]*\/writer\/data /.test(l));
  t.equal(dataDirs.length, 1, 'the storage folder is a mount of its own');
  const dataDir = dataDirs[0]!.split(' ')[4]!;
  const fill = await sb.exec('dd', ['if=/dev/zero', `of=${dataDir}/fill`, 'bs=64k', 'count=64']);
  t.not(fill.code, 0, 'writing 4 MiB into a 2 MiB storage fails');
  t.match(fill.stderr, /No space left on device/);
  t.match(await c.call('services.get', { id: 'writer' }), { state: 1 }, 'the service still runs');
  t.ok((await c.call<{ services: unknown[] }>('monitoring.get', {})).services, 'monitoring answers');

  const uid = svc.uid;
  const removed = await c.call<Op>('services.remove', { id: 'writer', wait: true });
  t.equal(removed.state, 'succeeded', JSON.stringify(removed.error));
  await t.rejects(c.call('services.get', { id: 'writer' }), { code: 'NOT_FOUND' });
  await t.rejects(c.call('services.remove', { id: 'writer' }), { code: 'NOT_FOUND' });
  t.notOk(existsSync(join(sb.unitDir, 'smd-writer.service')));
  t.equal((await sb.exec('getent', ['passwd', `smd-${uid}`])).code, 2, 'account removed');
  const storage = join(d.dir, 'data/storage');
  t.notOk(readdirSync(storage).some((k) => existsSync(join(storage, k, 'writer'))), 'storage removed');
});
