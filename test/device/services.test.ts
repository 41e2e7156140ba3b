/**
 * The product on a booted device with the shipped unit: services installed with smctl, reached
 * from a remote host through their own network, updated and rolled back, logged, counted,
 * limited, switched between users, and kept running across restarts and a kill -9 of smd.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildExampleImages, ROOT } from '../helpers/daemon.js';
import { addRemoteHost, startDevice } from '../helpers/device.js';

interface Op {
  state: string;
  error: { code: string; message: string } | null;
}
interface Svc {
  id: string;
  version: number;
  state: number;
  address: string | null;
  live?: { activeState: string; mainPid: number | null } | null;
}
interface Traffic {
  serviceId: string | null;
  direction: 'in' | 'out';
  bytes: number;
}

const REMOTE_NS = 'remote';

const device = await startDevice(t);
const images = mkdtempSync(join(tmpdir(), 'smd-device-images-'));
t.teardown(() => rmSync(images, { recursive: true, force: true }));
const img = buildExampleImages(images).byName;
for (const [name, path] of Object.entries(img)) device.copyIn(path, `/opt/images/${name}.tar`);
device.copyIn(join(ROOT, 'scripts/http-get.mjs'), '/opt/http-get.mjs');
const c = await device.client();

/** Waits (bounded) until `check` resolves truthy; rejects naming `what`. */
async function until<T>(what: string, check: () => Promise<T | null | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The hello-http page, fetched by the remote host through the device's forwarding. */
async function fetchFromRemote(): Promise<string> {
  const { address } = await c.call<Svc>('services.get', { id: 'hello-http' });
  // node, not busybox wget: the static busybox's wget crashes in glibc's resolver here.
  return device.run('ip', ['netns', 'exec', REMOTE_NS, 'node', '/opt/http-get.mjs', `http://${address}:8080/`], { timeoutMs: 15_000 });
}

const mainPid = async (unit: string) => Number((await device.run('systemctl', ['show', '-p', 'MainPID', '--value', unit])).trim());

t.before(async () => {
  await addRemoteHost(t, device, REMOTE_NS);
});

t.test('install with smctl; the page is served through the service network and counted', async (t) => {
  for (const name of ['hello-http', 'writer']) {
    const op = await device.smctl<Op>(['services', 'install', `/opt/images/${name}-v1.tar`], { timeoutMs: 60_000 });
    t.equal(op.state, 'succeeded', `${name}: ${JSON.stringify(op.error)}`);
  }
  const svc = await c.call<Svc>('services.get', { id: 'hello-http' });
  t.match(svc, { version: 1, state: 1, live: { activeState: 'active' } });
  t.match(svc.address, /^172\.30\./);
  const before = (await c.call<Traffic[]>('traffic.get', { serviceId: 'hello-http' })).find((r) => r.direction === 'out')?.bytes ?? 0;
  t.match(await fetchFromRemote(), /hello from smd, version 1/);
  // The sample runs every 10 s: wait for the one after the fetch.
  const after = await until('the page fetch counted as upload', async () => {
    const out = (await c.call<Traffic[]>('traffic.get', { serviceId: 'hello-http' })).find((r) => r.direction === 'out')?.bytes ?? 0;
    return out > before + 60 ? out : null;
  });
  t.ok(after - before >= 60, `upload grew by ${after - before} bytes (page + headers)`);
});

t.test('services.logs has the start lines from the journal', async (t) => {
  const logs = await until('two writer lines', async () => {
    const l = await c.call<{ entries: { message: string }[] }>('services.logs', { id: 'writer', lines: 20 });
    return l.entries.length >= 2 ? l : null;
  });
  t.match(logs.entries[0]!.message, /writer v1: tick \d+/);
});

t.test('update, then a failed update rolled back', async (t) => {
  const up = await c.call<Op>('services.install', { image: '/opt/images/hello-http-v2.tar', wait: true });
  t.equal(up.state, 'succeeded', JSON.stringify(up.error));
  t.match(await fetchFromRemote(), /version 2/);
  const bad = await c.call<Op>('services.install', { image: '/opt/images/failing-v1.tar', id: 'hello-http', version: 3, wait: true });
  t.equal(bad.state, 'failed');
  t.match(bad.error?.message, /version 2 was restored/);
  t.match(await c.call<Svc>('services.get', { id: 'hello-http' }), { version: 2, state: 1, live: { activeState: 'active' } });
  t.match(await fetchFromRemote(), /version 2/);
});

t.test('a storage quota is a loop mount, enforced inside the service', async (t) => {
  const svc = await c.call<Svc & { settings: { storageLimit?: number } }>('services.configure', { id: 'writer', settings: { storageLimit: 2 * 1024 * 1024 } });
  t.equal(svc.settings.storageLimit, 2 * 1024 * 1024);
  await device.waitActive('smd-writer.service');
  const mounts = (await device.run('cat', ['/proc/1/mountinfo'])).split('\n').filter((l) => / \/var\/lib\/smd\/storage\/[^ ]+\/writer\/data /.test(l));
  t.equal(mounts.length, 1, 'the storage folder is a mount of its own, seen by PID 1');
  const dir = mounts[0]!.split(' ')[4]!;
  t.match(await device.run('findmnt', ['-n', '-o', 'SOURCE', dir]), /\/dev\/loop\d+/);
  const fill = await device.exec('dd', ['if=/dev/zero', `of=${dir}/fill`, 'bs=64k', 'count=64']);
  t.not(fill.code, 0, 'writing 4 MiB into 2 MiB fails');
  t.match(fill.stderr, /No space left on device/);
  t.match(await c.call<Svc>('services.get', { id: 'writer' }), { state: 1 }, 'the service still runs');
  await device.run('rm', ['-f', `${dir}/fill`]);
});

t.test('users switch: services of the previous users stop, the new users get their own', async (t) => {
  const op = await c.call<Op & { result: { stopped: string[]; started: string[] } }>('users.set', { users: ['driver-42'], wait: true });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  t.same(op.result.stopped.sort(), ['hello-http', 'writer']);
  t.equal((await device.exec('systemctl', ['is-active', 'smd-writer.service'])).stdout.trim(), 'inactive');
  const inst = await c.call<Op>('services.install', { image: '/opt/images/writer-v1.tar', wait: true });
  t.equal(inst.state, 'succeeded', `attach: ${JSON.stringify(inst.error)}`);
  await device.waitActive('smd-writer.service');
  const back = await c.call<Op>('users.set', { users: [], wait: true });
  t.equal(back.state, 'succeeded', JSON.stringify(back.error));
  await device.waitActive('smd-hello-http.service');
  await device.waitActive('smd-writer.service');
});

t.test('systemctl restart smd and kill -9 of smd keep the services running, same MainPID', async (t) => {
  const pids = { web: await mainPid('smd-hello-http.service'), writer: await mainPid('smd-writer.service') };
  t.ok(pids.web > 0 && pids.writer > 0);
  await device.run('systemctl', ['restart', 'smd'], { timeoutMs: 120_000 });
  t.equal(await mainPid('smd-hello-http.service'), pids.web, 'restart: same MainPID');
  const smdPid = await mainPid('smd.service');
  await device.run('systemctl', ['kill', '--kill-whom=main', '--signal=KILL', 'smd']);
  await until('smd back after kill -9', async () => {
    const p = await mainPid('smd.service');
    return p !== smdPid && p > 0 && (await device.exec('systemctl', ['is-active', 'smd'])).stdout.trim() === 'active';
  }, 60_000);
  t.equal(await mainPid('smd-hello-http.service'), pids.web, 'kill -9: same MainPID');
  t.equal(await mainPid('smd-writer.service'), pids.writer);
  const c2 = await device.client();
  t.match(await c2.call<Svc>('services.get', { id: 'hello-http' }), { state: 1, live: { activeState: 'active', mainPid: pids.web } });
});

t.test('journal alerts: each <3> line of a service arrives once, across restarts', async (t) => {
  const c2 = await device.client();
  // The failed update above ran `failing`, whose line is `<3>failing v1: fatal error ...`.
  const journal = await device.run('journalctl', ['-o', 'json', '--no-pager', '-q', '-p', '0..3']);
  const lines = journal
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { MESSAGE?: unknown })
    .filter((e) => typeof e.MESSAGE === 'string' && /^failing v1: fatal error/.test(e.MESSAGE));
  t.ok(lines.length >= 1, `${lines.length} error lines in the journal`);
  const alerts = await until('journal alerts for each error line', async () => {
    const a = await c2.call<{ message: string }[]>('alerts.list', { source: 'journal', serviceId: 'hello-http' });
    return a.length >= lines.length ? a : null;
  });
  t.equal(alerts.filter((a) => /fatal error/.test(a.message)).length, lines.length, 'one alert per line, none repeated after two restarts of smd');
});
