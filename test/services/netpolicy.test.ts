/**
 * Network policy through the real daemon (sandbox: systemd --user, D-Bus, iptables): a LAN
 * client namespace reaches device:hostPort, a second service asking for it is CONFLICT, DNS rules
 * in the service's own /etc/hosts, egress rules changed live by services.configure without a
 * restart, dropped packets in traffic.get and smctl traffic, kill -9 keeps everything, hostile
 * values are -32602 naming the field, removal leaves nothing in iptables-save.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import t from 'tap';
import { chainHash } from '../../src/traffic/naming.js';
import { ROOT, SMCTL, startDaemon } from '../helpers/daemon.js';
import { STATE, servicesFixture, type Svc } from '../helpers/services-fixture.js';

const LAN_NS = 'lan';
const LAN_DEVICE_IP = '198.51.100.1';
const REMOTE_NS = 'remote';
const REMOTE_IP = '203.0.113.10';
const OTHER_REMOTE = '203.0.113.11';

const SERVER = `
import http from 'node:http';
for (const host of process.argv.slice(2)) http.createServer((req, res) => res.end('remote ' + host + '\\n')).listen(80, host);
console.log('listening');
`;

type TrafficRow = { serviceId: string | null; direction: string; bytes: number; dropped: number };

t.test('network policy through the daemon', async (t) => {
  const fx = await servicesFixture(t);
  const outer = t; // the restarted daemon lives until the whole test ends
  const { sb, c, img, install } = fx;
  let d = fx.d;
  let client = c;

  // A LAN client and a remote host, each a namespace joined to the sandbox (the device) by a veth.
  for (const [ns, dev, devIp, nsIp] of [
    [LAN_NS, 'lan0', LAN_DEVICE_IP, '198.51.100.10'],
    [REMOTE_NS, 'wan0', '203.0.113.1', REMOTE_IP],
  ] as const) {
    await sb.run('ip', ['netns', 'add', ns]);
    await sb.run('ip', ['link', 'add', dev, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await sb.run('ip', ['addr', 'add', `${devIp}/24`, 'dev', dev]);
    await sb.run('ip', ['link', 'set', dev, 'up']);
    await sb.run('ip', ['-n', ns, 'addr', 'add', `${nsIp}/24`, 'dev', 'eth0']);
    await sb.run('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    await sb.run('ip', ['-n', ns, 'route', 'add', 'default', 'via', devIp]);
  }
  await sb.run('ip', ['-n', REMOTE_NS, 'addr', 'add', `${OTHER_REMOTE}/24`, 'dev', 'eth0']);
  writeFileSync(join(fx.d.dir, 'remote.mjs'), SERVER);
  const server = sb.spawnInside('ip', ['netns', 'exec', REMOTE_NS, process.execPath, join(fx.d.dir, 'remote.mjs'), REMOTE_IP, OTHER_REMOTE], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => void (server.exitCode === null && server.kill('SIGKILL')));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('remote server did not listen')), 15_000);
    createInterface({ input: server.stdout! }).once('line', () => (clearTimeout(timer), resolve()));
  });

  const lanGet = (port: number) => sb.exec('ip', ['netns', 'exec', LAN_NS, process.execPath, join(ROOT, 'scripts/http-get.mjs'), `http://${LAN_DEVICE_IP}:${port}/`, '3000'], { timeoutMs: 15_000 });
  const mainPid = async (id: string) => (await client.call<Svc>('services.get', { id })).live!.mainPid!;
  /** A program run as the service sees the world: its mount namespace (root, /etc/hosts) and network. */
  const inService = async (id: string, args: string[]) => sb.exec('nsenter', ['-t', String(await mainPid(id)), '-m', '-n', '-r', '-w', ...args], { timeoutMs: 15_000 });
  /**
   * GET http://HOST/ from inside the service, its body in stdout. With busybox nc: Debian's static
   * busybox wget crashes in glibc (scripts/http-get.mjs); nc resolves names the same way (getaddrinfo, /etc/hosts).
   */
  const wget = async (id: string, url: string) => {
    const host = /^http:\/\/([^/]+)\/$/.exec(url)![1]!;
    const r = await inService(id, ['/bin/busybox', 'sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 2 ${host} 80`]);
    const body = r.stdout.split('\r\n\r\n').slice(1).join('\r\n\r\n');
    return { code: r.code === 0 && body ? 0 : r.code || 1, stdout: body, stderr: r.stderr };
  };
  const traffic = async (id: string, dir: string) => (await client.call<TrafficRow[]>('traffic.get', { serviceId: id })).find((r) => r.direction === dir)!;

  const web = { exposedPorts: [{ port: 8080, hostPort: 8088 }], dnsRules: [{ domain: 'remote.example', ip: REMOTE_IP }] };
  const op = await install({ image: img['hello-http-v1'], settings: web });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  const svc = await client.call<Svc & { settings: Record<string, unknown> }>('services.get', { id: 'hello-http' });
  t.same(svc.settings.exposedPorts, [{ port: 8080, protocol: 'tcp', hostPort: 8088 }], 'services.get shows the policy');
  const described = await client.call<{ columns: { name: string; type: string }[] }>('db.describe', { table: 'services' });
  t.match(described.columns.find((col) => col.name === 'networkPolicy'), { type: 'TEXT' }, 'db.describe services shows where the policy is stored');
  const pid0 = await mainPid('hello-http');

  await t.test('a LAN client reaches device:hostPort and gets the page', async (t) => {
    const page = await lanGet(8088);
    t.equal(page.code, 0, page.stderr);
    t.match(page.stdout, 'hello from smd, version 1');
  });

  await t.test('a second service asking for the same host port is CONFLICT', async (t) => {
    await t.rejects(client.call('services.install', { image: img['hello-http-v1'], id: 'hello-two', version: 1, settings: { exposedPorts: [{ port: 8080, hostPort: 8088 }] }, wait: true }), { code: 'CONFLICT', message: /8088\/tcp is already exposed by hello-http/ });
    const two = await install({ image: img['hello-http-v1'], id: 'hello-two', version: 1, settings: { exposedPorts: [{ hostPort: 8089 }] } });
    t.equal(two.state, 'succeeded', 'another host port is fine');
    const got = await client.call<Svc & { settings: Record<string, unknown> }>('services.get', { id: 'hello-two' });
    t.same(got.settings.exposedPorts, [{ protocol: 'tcp', hostPort: 8089, port: 8080 }], "port defaults to the image config's ExposedPorts (8080/tcp)");
    await t.rejects(client.call('services.configure', { id: 'hello-two', settings: { exposedPorts: [{ port: 8080, hostPort: 8088 }] } }), { code: 'CONFLICT' }, 'configure too');
    t.match((await lanGet(8089)).stdout, 'hello from smd', 'the second one on its own port');
    t.match((await lanGet(8088)).stdout, 'hello from smd', 'the first keeps its port');
  });

  await t.test("a DNS rule: the service's own /etc/hosts resolves the name to the chosen address", async (t) => {
    const hosts = await inService('hello-http', ['/bin/busybox', 'cat', '/etc/hosts']);
    t.match(hosts.stdout, `${REMOTE_IP}\tremote.example`);
    const got = await wget('hello-http', 'http://remote.example/');
    t.equal(got.stdout, `remote ${REMOTE_IP}\n`, `wget http://remote.example/ reached it ${got.stderr}`);
    await client.call('services.configure', { id: 'hello-http', settings: { dnsRules: [{ domain: 'remote.example', ip: OTHER_REMOTE }] } });
    t.equal((await wget('hello-http', 'http://remote.example/')).stdout, `remote ${OTHER_REMOTE}\n`, 'changed live');
    t.equal(await mainPid('hello-http'), pid0, 'without a restart');
  });

  await t.test('egress rules change live; drops are counted and shown', async (t) => {
    const w = await wget('hello-http', `http://${OTHER_REMOTE}/`);
    t.equal(w.code, 0, 'egress allowed by default');
    const s = await client.call<Svc & { settings: Record<string, unknown> }>('services.configure', {
      id: 'hello-http',
      settings: { egress: 'deny', trafficRules: [{ id: 'remote', priority: 10, direction: 'out', action: 'allow', filter: { cidr: `${REMOTE_IP}/32`, protocol: 'tcp', ports: [80] } }] },
    });
    t.equal(s.settings.egress, 'deny');
    t.equal((await wget('hello-http', `http://${REMOTE_IP}/`)).stdout, `remote ${REMOTE_IP}\n`, 'the allowed remote answers');
    t.not((await wget('hello-http', `http://${OTHER_REMOTE}/`)).code, 0, 'another remote does not');
    t.match((await lanGet(8088)).stdout, 'hello from smd', 'the exposed port still answers (replies pass)');
    t.equal(await mainPid('hello-http'), pid0, 'no restart');
    // The sample is periodic: poll traffic.get until it shows the drops.
    const deadline = Date.now() + 30_000;
    let row = await traffic('hello-http', 'out');
    while (row.dropped === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      row = await traffic('hello-http', 'out');
    }
    t.ok(row.dropped > 0, `dropped packets in traffic.get: ${row.dropped}`);
    const table = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [SMCTL, '--socket', d.socket, 'traffic'], (err, stdout) => (err ? reject(err) : resolve(stdout))),
    );
    t.match(table, /DROPPED/, 'smctl traffic has a dropped column');
    t.match(table.split('\n').find((l) => l.startsWith('hello-http ') && l.includes('out (upload)')) ?? '', /\s[1-9]\d* pkt\s/, "with the service's drops");
  });

  await t.test('hostile values are -32602 naming the field', async (t) => {
    for (const [settings, path] of [
      [{ exposedPorts: [{ port: 70000 }] }, 'settings.exposedPorts.0.port'],
      [{ trafficRules: [{ id: 'x', priority: 1, direction: 'out', action: 'drop', filter: { cidr: '10.0.0.0/99' } }] }, 'settings.trafficRules.0.filter.cidr'],
      [{ dnsRules: [{ domain: 'a.example\n10.0.0.1 b.example', ip: '10.0.0.1' }] }, 'settings.dnsRules.0.domain'],
    ] as const) {
      await t.rejects(client.call('services.configure', { id: 'hello-http', settings }), { rpcCode: -32602, message: new RegExp(path.replace(/\./g, '\\.')) }, path);
    }
  });

  const ours = async () =>
    (await sb.run('iptables-save', []))
      .split('\n')
      .filter((l) => l.includes(chainHash('hello-http')))
      .map((l) => l.replace(/^\[\d+:\d+\] /, '').replace(/ \[\d+:\d+\]$/, ''));

  await t.test('kill -9 of smd keeps the rules exactly; the restarted daemon repairs a deleted one', async (t) => {
    const before = await ours();
    t.ok(before.some((l) => l.includes('DNAT')) && before.some((l) => l.includes('_POL_OUT')), 'ports and policy chains are there');
    t.equal(await d.stop('SIGKILL'), null);
    t.same(await ours(), before, 'the kernel keeps them while smd is gone');
    t.match((await lanGet(8088)).stdout, 'hello from smd', 'the port keeps working meanwhile');
    // Something else deletes the DNAT chain's rule before smd comes back: reconciliation repairs it.
    await sb.run('iptables', ['-w', '-t', 'nat', '-F', `SMD_${chainHash('hello-http')}_DNAT`]);
    d = await startDaemon(outer, { dir: fx.d.dir, sandbox: sb });
    client = await d.client();
    t.same(await ours(), before, 'after the restart: exactly the same rules');
    t.match((await lanGet(8088)).stdout, 'hello from smd');
    t.equal((await client.call<Svc>('services.get', { id: 'hello-http' })).state, STATE.running);
  });

  await t.test('removal leaves nothing of the service in iptables-save; the port is closed', async (t) => {
    const removed = await client.call<{ state: string }>('services.remove', { id: 'hello-http', wait: true });
    t.equal(removed.state, 'succeeded');
    t.same(await ours(), [], 'no chain, hook or rule');
    t.not((await lanGet(8088)).code, 0, 'the port is closed');
    t.match((await lanGet(8089)).stdout, 'hello from smd', "the other service's port still answers");
  });
});
