/**
 * Reboots and power cuts on a booted device: after an orderly reboot, and after a power cut in the
 * middle of an install, the services that should run are running again from what is on disk,
 * nothing is half-installed and the database agrees with units, mounts, accounts and layers.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildExampleImages } from '../helpers/daemon.js';
import { startDevice, type Device } from '../helpers/device.js';
import { checkExtraInvariants, checkInvariants } from '../../scripts/stress/lib/invariants.mjs';
import { serviceChain } from '../../src/traffic/naming.js';

interface Op {
  id: string;
  state: string;
  step: string | null;
  error: { code: string; message: string } | null;
}
interface Svc {
  id: string;
  state: number;
}

const device = await startDevice(t);
const images = mkdtempSync(join(tmpdir(), 'smd-device-images-'));
t.teardown(() => rmSync(images, { recursive: true, force: true }));
const img = buildExampleImages(images).byName;
for (const [name, path] of Object.entries(img)) device.copyIn(path, `/opt/images/${name}.tar`);

/** The crash invariants of scripts/stress, on the device's files and inside its namespaces. */
async function problems(d: Device): Promise<string[]> {
  const view = { unitDir: `/proc/${d.pid1}/root/run/systemd/system`, exec: d.exec, run: d.run };
  const opts = { dbPath: d.hostPath('/var/lib/smd/smd.db'), dataDir: d.hostPath('/var/lib/smd'), runDir: '/run/smd', sandbox: view };
  const live: Record<string, string> = {};
  for (const s of await d.smctl<Svc[]>(['services', 'ls'])) live[s.id] = (await d.exec('systemctl', ['is-active', `smd-${s.id}.service`])).stdout.trim();
  return [...(await checkInvariants(opts)), ...(await checkExtraInvariants({ ...opts, live, traffic: true, chainName: serviceChain }))];
}

async function bootedWithServices(t: Test, d: Device, ids: string[]) {
  await d.waitActive('smd.service', 'active', 60_000);
  for (const id of ids) await d.waitActive(`smd-${id}.service`, 'active', 30_000);
  const list = await d.smctl<Svc[]>(['services', 'ls']);
  t.same(list.map((s) => s.id).sort(), [...ids].sort(), 'the services on disk, no more');
  t.ok(list.every((s) => s.state === 1), 'all recorded as running');
  t.same(await problems(d), [], 'database, units, mounts, accounts, layers, namespaces and chains agree');
}

t.test('installed services come back after an orderly reboot', async (t) => {
  for (const name of ['hello-http', 'writer']) {
    const op = await device.smctl<Op>(['services', 'install', `/opt/images/${name}-v1.tar`], { timeoutMs: 60_000 });
    t.equal(op.state, 'succeeded', `${name}: ${JSON.stringify(op.error)}`);
  }
  const bootMs = await device.reboot();
  t.comment(`reboot: booted again in ${bootMs} ms`);
  await bootedWithServices(t, device, ['hello-http', 'writer']);
});

t.test('a power cut in the middle of an install: back with what should run, nothing half-installed', async (t) => {
  // smd freezes itself as the install's start step begins (its files, unit, mounts and network
  // are made); the power is cut while it is frozen. The drop-in lives in /run: the boot removes it.
  await device.run('mkdir', ['-p', '/run/systemd/system/smd.service.d']);
  await device.run('tee', ['/run/systemd/system/smd.service.d/freeze.conf'], { input: '[Service]\nEnvironment=SMD_CRASH_AT=services.install:start:SIGSTOP\n' });
  await device.run('systemctl', ['daemon-reload']);
  await device.run('systemctl', ['restart', 'smd'], { timeoutMs: 120_000 });
  const c = await device.client();
  const op = await c.call<Op>('services.install', { image: '/opt/images/writer-v2.tar', id: 'late', version: 1 });
  const smdPid = Number((await device.run('systemctl', ['show', '-p', 'MainPID', '--value', 'smd'])).trim());
  const deadline = Date.now() + 30_000;
  let state = '';
  while (Date.now() < deadline) {
    state = (await device.run('cat', [`/proc/${smdPid}/stat`])).replace(/^.*\) /, '').split(' ')[0]!;
    if (state === 'T') break;
    await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(state, 'T', 'smd is frozen at the start step');
  t.equal((await device.exec('test', ['-e', '/run/systemd/system/smd-late.service'])).code, 0, 'the install had written its unit');

  await device.powerCut();
  const bootMs = await device.boot();
  t.comment(`power cut: booted again in ${bootMs} ms`);
  await bootedWithServices(t, device, ['hello-http', 'writer']);
  const c2 = await device.client();
  const after = await c2.call<Op>('operations.get', { id: op.id });
  t.equal(after.state, 'failed');
  t.match(after.error?.message, /interrupted/);
  await t.rejects(c2.call('services.get', { id: 'late' }), { code: 'NOT_FOUND' }, 'the interrupted fresh install was removed');
  t.equal((await device.exec('test', ['-e', '/run/systemd/system/smd.service.d/freeze.conf'])).code, 1, 'the boot removed the freeze');
});
