/**
 * Images from the network on a booted device with the shipped unit: a registry on a remote host
 * (Debian's docker-registry in a namespace of its own inside the device, one veth away), smd
 * configured by /etc/smd/smd.json, `smctl services install docker://...`; an update fetches only
 * its new layer; a desired state from the registry with `smctl apply`, a power cut in the middle
 * of an apply (the boot puts the previous state back); after a power cut and a boot the pulled
 * services are back.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildExampleImages, ROOT } from '../helpers/daemon.js';
import { addRemoteHost, startDevice } from '../helpers/device.js';
import { pushImage, startRegistry } from '../helpers/registry.js';

interface Op {
  state: string;
  error: { code: string; message: string } | null;
}
interface Svc {
  version: number;
  state: number;
  layers: string[];
  address: string | null;
  live?: { activeState: string } | null;
}

const device = await startDevice(t);
const images = mkdtempSync(join(tmpdir(), 'smd-device-pull-'));
t.teardown(() => rmSync(images, { recursive: true, force: true }));
const img = buildExampleImages(images).byName;
device.copyIn(join(ROOT, 'scripts/http-get.mjs'), '/opt/http-get.mjs');
const remote = await addRemoteHost(t, device);
const registry = await startRegistry(t, { netnsPid: remote.holderPid, address: remote.ip });
await pushImage(registry, img['hello-http-v1']!, 'hello:1');
await pushImage(registry, img['hello-http-v2']!, 'hello:2');
await pushImage(registry, img['writer-v1']!, 'writer:1');
await pushImage(registry, img['writer-v2']!, 'writer:2');

// The operator's configuration: this registry is plain http on the local network.
await device.run('sh', ['-c', 'mkdir -p /etc/smd && cat > /etc/smd/smd.json'], { input: JSON.stringify({ registries: { [registry.host]: { insecure: true } } }) });
await device.run('systemctl', ['restart', 'smd']);
await device.waitActive('smd');
const c = await device.client();
const blobGets = () => registry.requests().filter((q) => q.method === 'GET' && q.path.includes('/blobs/sha256:') && q.status === 200);

t.test('smctl installs from the registry; the service runs and serves', async (t) => {
  const op = await device.smctl<Op>(['services', 'install', `docker://${registry.host}/hello:1`], { timeoutMs: 90_000 });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  const svc = await c.call<Svc>('services.get', { id: 'hello-http' });
  t.match(svc, { version: 1, state: 1, live: { activeState: 'active' } });
  // node, not busybox wget: the static busybox's wget crashes in glibc's resolver here.
  t.match(await device.run('node', ['/opt/http-get.mjs', `http://${svc.address}:8080/`], { timeoutMs: 15_000 }), /version 1/);
});

t.test('an update fetches only the layer it does not have', async (t) => {
  const v1 = await c.call<Svc>('services.get', { id: 'hello-http' });
  const before = blobGets().length;
  const op = await c.call<Op>('services.install', { image: `docker://${registry.host}/hello:2`, wait: true });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  const v2 = await c.call<Svc>('services.get', { id: 'hello-http' });
  t.equal(v2.version, 2);
  const fetched = blobGets().slice(before).map((q) => q.path.replace(/^.*\/blobs\//, ''));
  for (const l of v2.layers.filter((x) => v1.layers.includes(x))) t.notOk(fetched.includes(l), `shared layer ${l.slice(0, 19)} not fetched again`);
});

/** A desired state for this registry: hello-http v2 and writer at `writer`. */
const desired = (version: number, writer: number) => ({
  version,
  services: [
    { id: 'hello-http', version: 2, image: `docker://${registry.host}/hello:2` },
    { id: 'writer', version: writer, image: `docker://${registry.host}/writer:${writer}` },
  ],
  layers: [],
});
interface ApplyOp extends Op {
  id: string;
  result: { items: { id: string; outcome: string }[] } | null;
}

t.test('smctl apply: a desired state from the registry, all of it running', async (t) => {
  await device.run('tee', ['/opt/desired-1.json'], { input: JSON.stringify(desired(1, 1)) });
  const op = await device.smctl<ApplyOp>(['apply', '/opt/desired-1.json'], { timeoutMs: 120_000 });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  t.same(Object.fromEntries(op.result!.items.map((i) => [i.id, i.outcome])), { 'hello-http': 'unchanged', writer: 'installed' });
  t.match(await c.call<Svc>('services.get', { id: 'writer' }), { version: 1, state: 1, live: { activeState: 'active' } });
});

t.test('a power cut in the middle of an apply: the boot puts the previous state back; applying again finishes it', async (t) => {
  // smd freezes as the writer's start begins (v2 unpacked, v1 stopped); the power is cut then.
  await device.run('mkdir', ['-p', '/run/systemd/system/smd.service.d']);
  await device.run('tee', ['/run/systemd/system/smd.service.d/freeze.conf'], { input: '[Service]\nEnvironment=SMD_CRASH_AT=state.apply:writer-start:SIGSTOP\n' });
  await device.run('systemctl', ['daemon-reload']);
  await device.run('systemctl', ['restart', 'smd'], { timeoutMs: 120_000 });
  const c1 = await device.client();
  const op = await c1.call<ApplyOp>('state.apply', { desired: desired(2, 2) });
  const smdPid = Number((await device.run('systemctl', ['show', '-p', 'MainPID', '--value', 'smd'])).trim());
  let state = '';
  for (const deadline = Date.now() + 60_000; Date.now() < deadline && state !== 'T'; await new Promise((r) => setTimeout(r, 100))) {
    state = (await device.run('cat', [`/proc/${smdPid}/stat`])).replace(/^.*\) /, '').split(' ')[0]!;
  }
  t.equal(state, 'T', 'smd is frozen at the start of the writer');

  await device.powerCut();
  await device.boot();
  await remote.reconnect();
  await device.waitActive('smd');
  await device.waitActive('smd-writer.service');
  const c2 = await device.client();
  t.match(await c2.call<Svc>('services.get', { id: 'writer' }), { version: 1, state: 1, live: { activeState: 'active' } }, 'the writer is back on v1, running');
  const st = await c2.call<{ applied: { version: number; state: string } | null }>('state.get', {});
  t.match(st.applied, { version: 2, state: 'failed' }, 'the interrupted apply is recorded as failed');
  t.equal((await c2.call<Op>('operations.get', { id: op.id })).state, 'failed');

  const again = await c2.call<ApplyOp>('state.apply', { desired: desired(2, 2), force: true, wait: true });
  t.equal(again.state, 'succeeded', JSON.stringify(again.error));
  t.match(await c2.call<Svc>('services.get', { id: 'writer' }), { version: 2, state: 1, live: { activeState: 'active' } });
});

t.test('after a power cut and a boot the service is back, installed from the registry', async (t) => {
  await device.powerCut();
  await device.boot();
  await device.waitActive('smd');
  await device.waitActive('smd-hello-http.service');
  const c2 = await device.client();
  t.match(await c2.call<Svc>('services.get', { id: 'hello-http' }), { version: 2, state: 1, live: { activeState: 'active' } });
});
