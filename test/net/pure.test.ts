import t from 'tap';
import { contains, formatIpv4, hostAt, hostCount, hostIndex, normalizeCidr, parseCidr, parseIpv4 } from '../../src/net/ipv4.js';
import { hostVethFor, netnsNameFor, netnsPathFor, peerVethFor } from '../../src/net/names.js';
import { parseNetnsList } from '../../src/net/network.js';
import { isSmError } from '../../src/errors.js';

t.test('ipv4 arithmetic', async (t) => {
  t.equal(parseIpv4('255.255.255.255'), 0xffffffff);
  t.equal(formatIpv4(parseIpv4('172.30.0.1')), '172.30.0.1');
  const c = parseCidr('172.30.5.9/16');
  t.equal(formatIpv4(c.network), '172.30.0.0', 'host bits cleared');
  t.equal(hostCount(c), 65534);
  t.equal(hostAt(c, 0), '172.30.0.1');
  t.equal(hostAt(c, 255), '172.30.1.0');
  t.equal(hostAt(c, 65533), '172.30.255.254');
  t.equal(hostIndex(c, '172.30.0.2'), 1);
  t.equal(hostIndex(c, '172.31.0.2'), -1);
  t.equal(hostIndex(c, '172.30.255.255'), -1, 'broadcast is no host');
  t.ok(contains(parseCidr('10.0.0.0/8'), '10.200.1.1'));
  t.equal(normalizeCidr('192.168.1.7'), '192.168.1.7/32');
  t.equal(normalizeCidr('0.0.0.0/0'), '0.0.0.0/0');
  for (const bad of ['1.2.3', '256.1.1.1', '1.2.3.4/33', '1.2.3.4/x', 'a.b.c.d/8']) {
    try {
      parseCidr(bad);
      t.fail(bad);
    } catch (err) {
      t.ok(isSmError(err), `refused ${bad}`);
    }
  }
  try {
    hostAt(parseCidr('10.0.0.0/30'), 2);
    t.fail('no third host in a /30');
  } catch (err) {
    t.ok(isSmError(err, 'LIMIT'));
  }
});

t.test('kernel names fit in 15 characters and are stable', async (t) => {
  const long = 'org.example.' + 'y'.repeat(500);
  for (const f of [netnsNameFor, hostVethFor, peerVethFor]) {
    t.ok(f(long).length <= 15, `${f.name} short`);
    t.equal(f(long), f(long));
    t.not(f('a'), f('b'));
  }
  t.equal(netnsPathFor('svc'), `/run/netns/${netnsNameFor('svc')}`);
  t.match(netnsNameFor('svc'), /^smd-[0-9a-f]{10}$/);
  t.same(parseNetnsList('smd-0123456789 (id: 0)\nremote\n\n'), ['smd-0123456789', 'remote']);
});

t.test('the bridge MAC is stable, unicast and locally administered', async (t) => {
  const { bridgeMac } = await import('../../src/net/network.js');
  const mac = bridgeMac('smd0');
  t.match(mac, /^02(:[0-9a-f]{2}){5}$/);
  t.equal(bridgeMac('smd0'), mac, 'the same name gives the same MAC');
  t.not(bridgeMac('smd1'), mac);
});
