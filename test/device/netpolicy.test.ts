/**
 * Network policy on a booted device with the shipped unit: a service exposed on the device's own
 * address is reached by a LAN host, its policy shown by smctl, kept exactly across a kill -9 of
 * smd and a reboot, and gone from iptables-save with the service.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildExampleImages, ROOT } from '../helpers/daemon.js';
import { addRemoteHost, startDevice } from '../helpers/device.js';
import { execBounded } from '../helpers/sandbox.js';
import { chainHash } from '../../src/traffic/naming.js';

interface Op {
  state: string;
  error: { code: string; message: string } | null;
}

const LAN_NS = 'lan';
const DEVICE_LAN_IP = '198.51.100.1'; // the device's end of addRemoteHost's link

const device = await startDevice(t);
const images = mkdtempSync(join(tmpdir(), 'smd-device-images-'));
t.teardown(() => rmSync(images, { recursive: true, force: true }));
const img = buildExampleImages(images).byName;
device.copyIn(img['hello-http-v1']!, '/opt/images/hello-http-v1.tar');
const lan = await addRemoteHost(t, device, LAN_NS);

/** Waits (bounded) until `check` resolves truthy; rejects naming `what`. */
async function until<T>(what: string, check: () => Promise<T | null | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check().catch(() => null);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** GET http://<device>:80/ from the LAN host: its namespace entered through the process holding it (the device's /run/netns goes with a reboot). */
const fromLan = () => execBounded('nsenter', ['-t', String(lan.holderPid), '-n', process.execPath, join(ROOT, 'scripts/http-get.mjs'), `http://${DEVICE_LAN_IP}:80/`, '3000'], { timeoutMs: 15_000 });
const ours = async () =>
  (await device.run('iptables-save', []))
    .split('\n')
    .filter((l) => l.includes(chainHash('hello-http')))
    .map((l) => l.replace(/^\[\d+:\d+\] /, '').replace(/ \[\d+:\d+\]$/, ''))
    .sort();

t.test('exposed on the device address, shown, kept across kill -9 and reboot, removed', async (t) => {
  const op = await device.smctl<Op>(['services', 'install', '/opt/images/hello-http-v1.tar', '--set', 'exposedPorts=[{"hostPort":80}]', '--set', 'egress=deny'], { timeoutMs: 60_000 });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  const page = await fromLan();
  t.equal(page.code, 0, page.stderr);
  t.match(page.stdout, 'hello from smd, version 1', 'the LAN host gets the page on device:80');
  const shown = await device.run('smctl', ['services', 'get', 'hello-http']);
  t.match(shown, /ports:\s+80\/tcp -> 8080/, "smctl services get shows the port, defaulted from the image's ExposedPorts");
  t.match(shown, /egress:\s+deny/);
  const rules = await ours();
  t.ok(rules.some((l) => l.includes('--to-destination') && l.endsWith(':8080')), 'the DNAT rule is there');

  const pid = Number((await device.run('systemctl', ['show', '-p', 'MainPID', '--value', 'smd.service'])).trim());
  await device.run('systemctl', ['kill', '--kill-whom=main', '--signal=KILL', 'smd.service']);
  await until('smd back after kill -9', async () => {
    const now = Number((await device.run('systemctl', ['show', '-p', 'MainPID', '--value', 'smd.service'])).trim());
    return now !== pid && now > 0 && (await device.exec('systemctl', ['is-active', 'smd.service'])).stdout.trim() === 'active';
  });
  t.same(await ours(), rules, 'after kill -9: exactly the same rules');
  t.match((await fromLan()).stdout, 'hello from smd');

  await device.reboot();
  await lan.reconnect();
  await device.waitActive('smd.service', 'active', 60_000);
  await until('the service running after the reboot', async () => (await device.exec('systemctl', ['is-active', 'smd-hello-http.service'])).stdout.trim() === 'active');
  t.same(await until('the rules after the reboot', async () => ((await ours()).length === rules.length ? ours() : null)), rules, 'after a reboot: exactly the same rules, from what is on disk');
  t.match((await until('the page after the reboot', async () => ((await fromLan()).code === 0 ? fromLan() : null))).stdout, 'hello from smd');

  const rm = await device.smctl<Op>(['services', 'rm', 'hello-http'], { timeoutMs: 60_000 });
  t.equal(rm.state, 'succeeded', JSON.stringify(rm.error));
  t.same(await ours(), [], 'iptables-save shows nothing of the service');
  t.not((await fromLan()).code, 0, 'the port is closed');
});
