/**
 * Network policy with real iptables in a sandbox: a LAN client namespace reaches a service through
 * the device's address and an exposed port; egress deny with one allow rule, DNS to the
 * resolver still passing, a reject rule; dropped packets counted; rules changed live; all of it
 * gone from iptables-save after removal.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import t from 'tap';
import { NetworkManager } from '../../src/net/network.js';
import { TrafficMonitor } from '../../src/traffic/monitor.js';
import { chainHash } from '../../src/traffic/naming.js';
import { parseIptablesSave } from '../../src/traffic/parse.js';
import { policyDispatch, servicePolicyChains } from '../../src/traffic/policy.js';
import type { NetworkPolicy } from '../../src/traffic/policy-schema.js';
import { planRuleset } from '../../src/traffic/rules.js';
import { EventBus } from '../../src/events/bus.js';
import { AlertStore } from '../../src/alerts/store.js';
import { silentLogger } from '../../src/log.js';
import { REMOTE_IP, REMOTE_NS, startLab } from './fixtures/lab.js';

const LAN_NS = 'lablan';
const LAN_DEVICE_IP = '198.51.100.1';
const LAN_CLIENT_IP = '198.51.100.10';
const OTHER_REMOTE = '203.0.113.11';
const RESOLVER = '203.0.113.53';
const noLimits = { ulLimit: null, dlLimit: null, ulSpeed: null, dlSpeed: null };

/** `node probe.mjs tcp HOST PORT PATH TIMEOUT` prints {status, bytes} or {error}; `udp HOST PORT TIMEOUT` prints {reply} or {error}. */
const PROBE = `
import http from 'node:http';
import dgram from 'node:dgram';
const [kind, host, port, a, b] = process.argv.slice(2);
const t0 = performance.now();
const done = (v) => { console.log(JSON.stringify({ ...v, ms: Math.round(performance.now() - t0) })); process.exit(0); };
if (kind === 'tcp') {
  const timer = setTimeout(() => done({ error: 'timeout' }), Number(b));
  http.get({ host, port: Number(port), path: a, agent: false }, (res) => {
    let bytes = 0;
    res.on('data', (d) => (bytes += d.length));
    res.on('end', () => { clearTimeout(timer); done({ status: res.statusCode, bytes }); });
  }).on('error', (err) => { clearTimeout(timer); done({ error: err.code ?? String(err) }); });
} else {
  const s = dgram.createSocket('udp4');
  const timer = setTimeout(() => done({ error: 'timeout' }), Number(a));
  s.on('message', (m) => { clearTimeout(timer); done({ reply: m.toString() }); });
  s.send('ping', Number(port), host);
}
`;

/** A UDP echo on HOST:PORT (the resolver stand-in and a non-DNS port). */
const ECHO = `
import dgram from 'node:dgram';
const [host, ...ports] = process.argv.slice(2);
let n = 0;
for (const p of ports) {
  const s = dgram.createSocket('udp4');
  s.on('message', (m, r) => s.send('pong:' + p, r.port, r.address));
  s.bind(Number(p), host, () => { if (++n === ports.length) console.log('listening'); });
}
`;

type Probe = { status?: number; bytes?: number; error?: string; reply?: string; ms: number };

t.test('network policy in a sandbox: exposed ports, egress rules, drops, live changes, removal', async (t) => {
  const lab = await startLab(t, { persistIntervalMs: 3_600_000, sampleIntervalMs: 3_600_000 });
  const { sandbox, runner, opened } = lab;
  const db = opened.db;
  writeFileSync(join(lab.dir, 'probe.mjs'), PROBE);
  writeFileSync(join(lab.dir, 'echo.mjs'), ECHO);

  const spawnListening = async (ns: string, args: string[]) => {
    const child = sandbox.spawnInside('ip', ['netns', 'exec', ns, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    t.teardown(() => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${args.join(' ')} did not listen within 15 s`)), 15_000);
      createInterface({ input: child.stdout! }).once('line', () => (clearTimeout(timer), resolve()));
      child.once('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code}`)));
    });
    return child;
  };
  const probe = async (ns: string, args: string[]): Promise<Probe> => {
    const r = await sandbox.exec('ip', ['netns', 'exec', ns, process.execPath, join(lab.dir, 'probe.mjs'), ...args], { timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`probe failed: ${r.stderr}`);
    return JSON.parse(r.stdout.trim()) as Probe;
  };
  const http = (ns: string, host: string, port: number, path = '/bytes/1000', timeoutMs = 3000) => probe(ns, ['tcp', host, String(port), path, String(timeoutMs)]);
  const udp = (ns: string, host: string, port: number, timeoutMs = 3000) => probe(ns, ['udp', host, String(port), String(timeoutMs)]);

  // A second remote and a resolver stand-in on the remote host; a LAN client namespace.
  await sandbox.run('ip', ['-n', REMOTE_NS, 'addr', 'add', `${OTHER_REMOTE}/24`, 'dev', 'eth0']);
  await sandbox.run('ip', ['-n', REMOTE_NS, 'addr', 'add', `${RESOLVER}/24`, 'dev', 'eth0']);
  await spawnListening(REMOTE_NS, [join(lab.dir, 'server.mjs'), OTHER_REMOTE]);
  await spawnListening(REMOTE_NS, [join(lab.dir, 'echo.mjs'), RESOLVER, '53', '5353']);
  await sandbox.run('ip', ['netns', 'add', LAN_NS]);
  await sandbox.run('ip', ['link', 'add', 'lablan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', LAN_NS]);
  await sandbox.run('ip', ['addr', 'add', `${LAN_DEVICE_IP}/24`, 'dev', 'lablan0']);
  await sandbox.run('ip', ['link', 'set', 'lablan0', 'up']);
  await sandbox.run('ip', ['-n', LAN_NS, 'addr', 'add', `${LAN_CLIENT_IP}/24`, 'dev', 'eth0']);
  await sandbox.run('ip', ['-n', LAN_NS, 'link', 'set', 'eth0', 'up']);
  await sandbox.run('ip', ['-n', LAN_NS, 'link', 'set', 'lo', 'up']);
  await sandbox.run('ip', ['-n', LAN_NS, 'route', 'add', 'default', 'via', LAN_DEVICE_IP]);

  const net = new NetworkManager({ db, config: lab.config, logger: silentLogger, runner });
  await net.ensureBridge();
  const A = 'org.example.web';
  const B = 'org.example.other';
  const a = await net.ensureServiceNetwork(A);
  const b = await net.ensureServiceNetwork(B);
  await spawnListening(a.netnsName, [join(lab.dir, 'server.mjs'), a.address]);

  const bus = new EventBus();
  const mon = new TrafficMonitor({ db, bus, alerts: new AlertStore({ db, bus }), config: lab.config, logger: silentLogger, runner });
  t.teardown(() => mon.stop());
  await mon.start();
  const policy = (p: Partial<NetworkPolicy>): NetworkPolicy => ({ exposedPorts: [], trafficRules: [], egress: 'allow', nameservers: [RESOLVER], ...p });
  const add = (id: string, net: { address: string; hostVeth: string; netnsName: string }, p: NetworkPolicy) => mon.addService(id, net.address, { ...noLimits, hostVeth: net.hostVeth, netnsName: net.netnsName, policy: p });
  const row = (id: string, dir: 'in' | 'out') => mon.get(id).find((r) => r.direction === dir)!;
  /** What smd wants of A's policy, planned against the live tables: nothing to do when the spelling is canonical. */
  const replan = async (p: NetworkPolicy) => {
    const saved = parseIptablesSave(await sandbox.run('iptables-save', ['-c']));
    const chains = servicePolicyChains(A, a.address, p);
    const d = policyDispatch();
    return planRuleset(saved, { filter: [d.filter, ...chains.filter], nat: [d.nat, ...chains.nat] }).script;
  };

  const web = policy({ exposedPorts: [{ port: 80, protocol: 'tcp', hostPort: 8080 }] });
  await add(A, a, web);
  await add(B, b, policy({}));

  await t.test('a LAN client reaches device:hostPort and gets the service; it is counted as today', async (t) => {
    await mon.sampleNow();
    const before = row(A, 'out').bytes;
    const got = await http(LAN_NS, LAN_DEVICE_IP, 8080, '/bytes/200000');
    t.same([got.status, got.bytes], [200, 200_000], `the LAN client got the page through DNAT ${JSON.stringify(got)}`);
    await mon.sampleNow();
    t.ok(row(A, 'out').bytes - before >= 200_000, `the answer is the service's upload: ${row(A, 'out').bytes - before}`);
    t.equal((await http(LAN_NS, LAN_DEVICE_IP, 8081)).error !== undefined, true, 'a port nobody exposes is not forwarded');
    const nat = await sandbox.run('iptables-save', ['-t', 'nat']);
    t.match(nat, `-A SMD_${chainHash(A)}_DNAT -p tcp -m tcp --dport 8080 -j DNAT --to-destination ${a.address}:80`);
    t.match(nat, '-A PREROUTING -m addrtype --dst-type LOCAL -j SMD_PORTS');
    t.equal(await replan(web), null, 'the rules as planned are what iptables-save prints: an unchanged policy plans to nothing');
  });

  await t.test('interfaces limit where the port is reachable', async (t) => {
    const only = policy({ exposedPorts: [{ port: 80, protocol: 'tcp', hostPort: 8080, interfaces: ['labwan0'] }] });
    await add(A, a, only);
    t.ok((await http(LAN_NS, LAN_DEVICE_IP, 8080)).error, 'not from the LAN interface');
    t.equal(await replan(only), null);
    await add(A, a, web);
    t.equal((await http(LAN_NS, LAN_DEVICE_IP, 8080)).status, 200, 'back on every interface, live');
  });

  const locked = policy({
    exposedPorts: web.exposedPorts,
    egress: 'deny',
    trafficRules: [
      { id: 'remote-web', priority: 10, direction: 'out', action: 'allow', filter: { cidr: `${REMOTE_IP}/32`, protocol: 'tcp', ports: [80] } },
      { id: 'refuse', priority: 5, direction: 'out', action: 'reject', filter: { cidr: '203.0.113.12/32', protocol: 'tcp', ports: [80, 443] } },
    ],
  });

  await t.test('egress deny with one allow rule: allowed remote answers, another is dropped and counted, DNS passes, reject refuses', async (t) => {
    t.equal((await http(a.netnsName, OTHER_REMOTE, 80)).status, 200, 'before: egress allowed');
    await add(A, a, locked);
    await mon.sampleNow();
    const dropped0 = row(A, 'out').dropped;
    const allowed = await http(a.netnsName, REMOTE_IP, 80, '/bytes/50000');
    t.same([allowed.status, allowed.bytes], [200, 50_000], 'the allowed remote answers');
    const other = await http(a.netnsName, OTHER_REMOTE, 80, '/bytes/10', 2000);
    t.equal(other.error, 'timeout', 'another remote is dropped (no answer, no refusal)');
    await mon.sampleNow();
    t.ok(row(A, 'out').dropped > dropped0, `dropped packets counted: ${row(A, 'out').dropped}`);
    t.equal(row(B, 'out').dropped, 0, "another service's drops are its own");
    t.same(await udp(a.netnsName, RESOLVER, 53).then((r) => r.reply), 'pong:53', 'DNS to the resolver still passes');
    t.equal((await udp(a.netnsName, RESOLVER, 5353, 1500)).error, 'timeout', 'another port of the same host does not');
    const refused = await http(a.netnsName, '203.0.113.12', 443, '/', 5000);
    t.equal(refused.error, 'ECONNREFUSED', 'reject gives a refusal');
    t.ok(refused.ms < 1500, `at once (${refused.ms} ms)`);
    t.equal((await http(LAN_NS, LAN_DEVICE_IP, 8080)).status, 200, 'replies of the exposed port pass the deny');
    t.equal((await http(b.netnsName, OTHER_REMOTE, 80)).status, 200, 'the other service is not affected');
    t.equal(await replan(locked), null, 'canonical spelling of rules, multiport, reject and DNS');
  });

  await t.test('inbound rules: a drop by source CIDR, by priority before an allow', async (t) => {
    const inbound = policy({
      exposedPorts: web.exposedPorts,
      trafficRules: [
        { id: 'lan-ok', priority: 20, direction: 'in', action: 'allow', filter: { cidr: '198.51.100.0/24' } },
        { id: 'no-client', priority: 10, direction: 'in', action: 'drop', filter: { cidr: `${LAN_CLIENT_IP}/32`, protocol: 'tcp', ports: [80] } },
      ],
    });
    await mon.sampleNow();
    const d0 = row(A, 'in').dropped;
    await add(A, a, inbound);
    t.equal((await http(LAN_NS, LAN_DEVICE_IP, 8080, '/', 2000)).error, 'timeout', 'the drop (priority 10) wins over the allow (20)');
    await mon.sampleNow();
    t.ok(row(A, 'in').dropped > d0, 'counted as dropped inbound');
    t.equal(await replan(inbound), null);
  });

  await t.test('removal leaves nothing of the service in iptables; the port is closed', async (t) => {
    await add(A, a, locked);
    await mon.removeService(A);
    const all = await sandbox.run('iptables-save', []);
    t.notMatch(all, chainHash(A), 'no chain, hook or rule of the service in any table');
    t.notMatch(all, a.address, 'nothing naming its address');
    t.match(all, `SMD_${chainHash(B)}_IN`, 'the other service keeps its chains');
    t.ok((await http(LAN_NS, LAN_DEVICE_IP, 8080, '/', 2000)).error, 'the port is closed');
  });
});
