/**
 * The fleet on a booted device with the shipped unit: Mosquitto (the host's binary) on a remote
 * host inside the device (its own network namespace, one veth away, 198.51.100.2) with a password
 * file; smd configured by /etc/smd/smd.json's `fleet` section, restarted by systemctl; a retained
 * desired state published there with mosquitto_pub before smd connects is applied: `reported`
 * says applied, the service is active on the device, `online` is retained true.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildExampleImages } from '../helpers/daemon.js';
import { addRemoteHost, startDevice } from '../helpers/device.js';
import { startMosquitto } from '../helpers/mosquitto.js';
import { execBounded, succeeded } from '../helpers/sandbox.js';

interface Report {
  desiredVersion: number | null;
  status: { state: string; code?: string; message?: string };
  services: { id: string; version: number; state: number; status: number }[];
}

const device = await startDevice(t);
const scratch = mkdtempSync(join(tmpdir(), 'smd-device-fleet-'));
t.teardown(() => rmSync(scratch, { recursive: true, force: true }));
const img = buildExampleImages(join(scratch, 'images')).byName;
const remote = await addRemoteHost(t, device);
const broker = await startMosquitto(t, { netnsPid: remote.holderPid, address: remote.ip }, scratch);
t.teardown(() => {
  if (!t.passing()) console.error(`--- mosquitto ---\n${broker.output().slice(-3000)}`);
});
const deviceId = 'field-7';
const base = `smd/${deviceId}`;
/** mosquitto_pub / mosquitto_sub of this host, in the remote namespace (as the fleet's operator). */
const inRemote = (cmd: string, args: string[], timeoutMs = 20_000) => succeeded(execBounded('nsenter', ['-t', String(remote.holderPid), '-n', '--', cmd, ...args], { timeoutMs }), cmd, args);
const auth = ['-h', remote.ip, '-p', String(broker.port), '-u', 'tester', '-P', 'tester-pass'];

t.test('a retained desired state from the fleet is applied on the device and reported', async (t) => {
  const image = device.copyIn(img['hello-http-v1']!, '/opt/images/hello-http-v1.tar');
  const desired = { version: 1, services: [{ id: 'hello-http', version: 1, image }], layers: [] };
  await inRemote('mosquitto_pub', [...auth, '-q', '1', '-r', '-t', `${base}/desired`, '-m', JSON.stringify(desired)]);

  // The operator's configuration, as on a real device.
  await device.run('mkdir', ['-p', '/etc/smd']);
  await device.run('tee', ['/etc/smd/fleet.password'], { input: `${broker.password}\n` });
  await device.run('chmod', ['600', '/etc/smd/fleet.password']);
  const fleet = { url: `mqtt://${remote.ip}:${broker.port}`, deviceId, username: broker.user, passwordFile: '/etc/smd/fleet.password', reconnect: { minMs: 500, maxMs: 5000 } };
  await device.run('tee', ['/etc/smd/smd.json'], { input: JSON.stringify({ fleet }) });
  await device.run('systemctl', ['restart', 'smd'], { timeoutMs: 60_000 });
  await device.waitActive('smd');

  const watch = await broker.client([`${base}/#`]);
  const applied = await watch
    .waitFor((m) => m.topic === `${base}/reported` && ((r: Report) => r.desiredVersion === 1 && r.status.state === 'applied')(JSON.parse(m.text) as Report), 120_000, 'a report of v1 applied')
    .then((m) => JSON.parse(m.text) as Report);
  t.match(applied.services, [{ id: 'hello-http', version: 1, state: 1, status: 0 }], 'reported: hello-http v1 running');
  await device.waitActive('smd-hello-http.service');
  const c = await device.client();
  t.match(await c.call('services.get', { id: 'hello-http' }), { version: 1, state: 1, live: { activeState: 'active' } }, 'active on the device');
  t.match(await device.smctl(['fleet']), { connection: 'connected', desired: { version: 1, state: 'applied' } }, 'smctl fleet on the device says so');

  // `online` retained true: a subscriber that comes later gets it from the broker.
  const online = await inRemote('mosquitto_sub', [...auth, '-t', `${base}/online`, '-C', '1', '-v', '-W', '10']);
  t.equal(online.trim(), `${base}/online true`, 'online is retained true');
  const retainedReport = await inRemote('mosquitto_sub', [...auth, '-t', `${base}/reported`, '-C', '1', '-W', '10', '--retained-only']);
  t.match(JSON.parse(retainedReport) as Report, { desiredVersion: 1, status: { state: 'applied' } }, 'and the retained report says applied');
});
