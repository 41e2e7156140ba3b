/**
 * The shipped unit on a booted device (systemd as PID 1, the system bus), installed as the README
 * says and enabled unchanged, with no configuration file.
 */
import t from 'tap';
import { tmpdir } from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { buildExampleImages } from '../helpers/daemon.js';
import { startDevice } from '../helpers/device.js';

interface Health {
  ok: boolean;
  checks: Record<string, { ok: boolean; detail: string; reconnects?: number }>;
}
interface Op {
  state: string;
  error: { code: string; message: string } | null;
}

/** `systemd-analyze security UNIT` → the overall exposure (0.0 safe .. 10.0 exposed). */
async function exposure(run: (cmd: string, args: string[]) => Promise<string>, unit: string): Promise<number> {
  const out = await run('systemd-analyze', ['security', '--no-pager', unit]);
  const m = /Overall exposure level for \S+: (\d+\.\d)/.exec(out);
  if (!m) throw new Error(`no exposure level in: ${out.slice(-400)}`);
  return Number(m[1]);
}

const device = await startDevice(t);
const images = mkdtempSync(join(tmpdir(), 'smd-device-images-'));
t.teardown(() => rmSync(images, { recursive: true, force: true }));
const img = buildExampleImages(images, ['--version', '1']).byName;

t.test('the shipped unit starts smd with no configuration file, and everything is healthy', async (t) => {
  t.equal((await device.exec('test', ['-e', '/etc/smd/smd.json'])).code, 1, 'there is no /etc/smd/smd.json');
  t.equal((await device.run('systemctl', ['is-active', 'smd'])).trim(), 'active');
  t.not((await device.exec('sh', ['-c', 'command -v sysctl'])).code, 0, 'the device has no sysctl(8)');
  const health = await device.smctl<Health>(['health']);
  for (const [name, check] of Object.entries(health.checks)) t.ok(check.ok, `${name}: ${check.detail}`);
  t.ok(health.ok);
  const unitText = await device.run('systemctl', ['cat', 'smd']);
  t.notMatch(unitText, /^# \/etc\/systemd\/system\/smd\.service\.d\//m, 'no drop-in changes the shipped unit');
});

t.test('services start under the confined unit: its mounts are visible to PID 1', async (t) => {
  const pid = Number((await device.run('systemctl', ['show', '-p', 'MainPID', '--value', 'smd'])).trim());
  t.equal(await device.run('readlink', [`/proc/${pid}/ns/mnt`]), await device.run('readlink', ['/proc/1/ns/mnt']), 'smd shares the mount namespace of PID 1');
  device.copyIn(img['hello-http-v1']!, '/opt/images/hello-http-v1.tar');
  const op = await device.smctl<Op>(['services', 'install', '/opt/images/hello-http-v1.tar'], { timeoutMs: 60_000 });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  t.equal((await device.run('systemctl', ['is-active', 'smd-hello-http.service'])).trim(), 'active');
});

t.test('systemd-analyze security: smd at most 5.0 (MEDIUM), every service unit OK (at most 2.0)', async (t) => {
  const run = (cmd: string, args: string[]) => device.run(cmd, args);
  const smd = await exposure(run, 'smd.service');
  t.ok(smd <= 5.0, `smd.service exposure ${smd}`);
  const service = await exposure(run, 'smd-hello-http.service');
  t.ok(service <= 2.0, `smd-hello-http.service exposure ${service}`);
  t.comment(`exposure: smd.service ${smd}, smd-hello-http.service ${service}`);
});

t.test('a program smd needs that the device lacks is named in system.health', async (t) => {
  await device.run('mv', ['/usr/sbin/mkfs.ext4', '/usr/sbin/mkfs.ext4.aside']);
  t.teardown(() => device.run('mv', ['/usr/sbin/mkfs.ext4.aside', '/usr/sbin/mkfs.ext4']));
  const r = await device.exec('smctl', ['--json', 'health']);
  t.equal(r.code, 1, 'smctl health exits 1');
  const health = JSON.parse(r.stdout) as Health;
  t.match(health.checks.programs, { ok: false, detail: /mkfs\.ext4 \(storage quotas\).*apt-get install e2fsprogs/ });
});

// Last: by now smd has run for more than two ping intervals (5 s) on the real system bus.
t.test('the bus health check is allowed by the system bus policy: no reconnect loop', async (t) => {
  const deadline = Date.now() + 30_000;
  let activeFor = 0;
  while (Date.now() < deadline) {
    const since = (await device.run('systemctl', ['show', '-p', 'ActiveEnterTimestampMonotonic', '--value', 'smd'])).trim();
    const now = Number((await device.run('cat', ['/proc/uptime'])).split(' ')[0]) * 1e6;
    activeFor = (now - Number(since)) / 1000;
    if (activeFor > 11_000) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  t.ok(activeFor > 11_000, `smd active for ${Math.round(activeFor)} ms`);
  const health = await device.smctl<Health>(['health']);
  t.equal(health.checks.systemd!.reconnects, 0, health.checks.systemd!.detail);
  const journal = await device.run('journalctl', ['-u', 'smd', '--no-pager', '-q', '-o', 'cat']);
  t.notMatch(journal, /bus ping failed|Rejected send message/);
});
