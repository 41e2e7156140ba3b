import t from 'tap';
import { NetworkManager } from '../../src/net/network.js';
import { hostVethFor, netnsNameFor, peerVethFor } from '../../src/net/names.js';
import { openDatabase } from '../../src/db/database.js';
import { silentLogger } from '../../src/log.js';
import { startLab, REMOTE_NS } from '../traffic/fixtures/lab.js';

t.test('service networks in a sandbox: bridge, namespaces, addresses, NAT, reconcile', async (t) => {
  const lab = await startLab(t);
  const { sandbox } = lab;
  const net = new NetworkManager({ db: lab.opened.db, config: lab.config, logger: silentLogger, runner: lab.runner });

  await net.ensureBridge();
  await net.ensureBridge();
  const br = JSON.parse(await sandbox.run('ip', ['-4', '-j', 'addr', 'show', 'dev', 'smdlab0'])) as { addr_info: { local: string; prefixlen: number }[] }[];
  t.same(br[0]!.addr_info.map((a) => `${a.local}/${a.prefixlen}`), ['172.30.0.1/24'], 'the bridge has the first host address, once');
  t.equal((await sandbox.run('cat', ['/proc/sys/net/ipv4/ip_forward'])).trim(), '1', 'forwarding enabled without sysctl(8)');
  const nat = await sandbox.run('iptables-save', ['-t', 'nat']);
  t.equal(nat.split('\n').filter((l) => l.includes('-s 172.30.0.0/24 ! -o smdlab0 -j MASQUERADE')).length, 1, 'one MASQUERADE rule after two ensures');
  t.ok(net.health().ok, net.health().detail);

  const longId = 'com.example.' + 'really-long-service-name-'.repeat(8);
  const a1 = await net.ensureServiceNetwork(longId);
  const a2 = await net.ensureServiceNetwork(longId);
  t.same(a2, a1, 'ensure twice: same network');
  t.equal(a1.address, '172.30.0.2');
  t.equal(a1.netnsPath, `/run/netns/${netnsNameFor(longId)}`);
  t.equal(a1.hostVeth, hostVethFor(longId));
  const b = await net.ensureServiceNetwork('svc-b');
  t.equal(b.address, '172.30.0.3', 'next free address');

  const inside = JSON.parse(await sandbox.run('ip', ['-4', '-n', a1.netnsName, '-j', 'addr', 'show', 'dev', 'eth0'])) as { addr_info: { local: string }[] }[];
  t.same(inside[0]!.addr_info.map((a) => a.local), ['172.30.0.2'], 'eth0 inside the namespace carries the address');
  t.match(await sandbox.run('ip', ['-n', a1.netnsName, 'route', 'show', 'default']), /default via 172\.30\.0\.1 dev eth0/);
  t.match(await sandbox.run('ip', ['link', 'show', a1.hostVeth]), /master smdlab0/);

  const dl = await lab.download(a1.netnsName, 100_000);
  t.equal(dl.code, 0, `a service reaches the remote host through the bridge and NAT ${dl.stderr}`);
  t.equal(dl.bytes, 100_000);

  // A crash left half of it: the pair exists but the peer was never renamed or addressed.
  await sandbox.run('ip', ['link', 'del', b.hostVeth]);
  await sandbox.run('ip', ['link', 'add', b.hostVeth, 'type', 'veth', 'peer', 'name', peerVethFor('svc-b'), 'netns', b.netnsName]);
  const b2 = await net.ensureServiceNetwork('svc-b');
  t.same(b2, b, 'converges after a half-made veth');
  t.equal((await lab.download(b.netnsName, 10_000)).code, 0, 'and works again');
  // The namespace itself vanished.
  await sandbox.run('ip', ['netns', 'del', b.netnsName]);
  await net.ensureServiceNetwork('svc-b');
  t.equal((await lab.download(b.netnsName, 10_000)).code, 0, 'a lost namespace is made again');

  // Concurrent allocations (also from another connection to the same file) never collide.
  const other = openDatabase(lab.opened.sqlite.name);
  t.teardown(() => other.close());
  const net2 = new NetworkManager({ db: other.db, config: lab.config, logger: silentLogger, runner: lab.runner });
  const ids = Array.from({ length: 20 }, (_, i) => `bulk-${i}`);
  const addrs = ids.map((id, i) => (i % 2 ? net : net2).allocateAddress(id));
  t.equal(new Set(addrs).size, ids.length, 'distinct addresses');
  t.equal(net.allocateAddress('bulk-3'), addrs[3], 'stable for the service');

  const orphanNs = netnsNameFor('gone-without-a-row');
  await sandbox.run('ip', ['netns', 'add', orphanNs]);
  const r = await net.reconcile(new Set([longId]));
  t.same(r.failed, []);
  t.ok(r.removed.includes('svc-b') && r.removed.includes('bulk-0') && r.removed.includes(orphanNs), JSON.stringify(r.removed));
  const nsList = await sandbox.run('ip', ['netns', 'list']);
  t.match(nsList, a1.netnsName);
  t.notMatch(nsList, b.netnsName);
  t.notMatch(nsList, orphanNs);
  t.match(nsList, REMOTE_NS, 'namespaces that are not smd-* are left alone');
  t.not((await sandbox.exec('ip', ['link', 'show', b.hostVeth])).code, 0, 'veth of the removed service is gone');
  t.equal(net.addressOf('svc-b'), null, 'allocation released');
  t.equal(net.addressOf(longId), '172.30.0.2');
  t.equal((await lab.download(a1.netnsName, 10_000)).code, 0, 'the live service still works after reconcile');

  await net.removeServiceNetwork(longId);
  await net.removeServiceNetwork(longId);
  t.notMatch(await sandbox.run('ip', ['netns', 'list']), a1.netnsName, 'removed (twice is fine)');
  t.equal(net.allocateAddress('fresh'), '172.30.0.2', 'a released address is reused');
});
