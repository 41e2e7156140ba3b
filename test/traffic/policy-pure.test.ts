/** Pure logic of the network policy: validation of hostile values, rule planning, DNS files, port conflicts. */
import t from 'tap';
import { settingsSchema, settingsToColumns, columnsToSettings } from '../../src/services/settings.js';
import { checkPortConflicts, resolvePorts } from '../../src/services/ports.js';
import type { Row } from '../../src/services/types.js';
import { isSmError } from '../../src/errors.js';
import { isSmdChain, policyChain, portsChain, allServiceChains, MAX_CHAIN_NAME } from '../../src/traffic/naming.js';
import { droppedPackets, parseIptablesSave } from '../../src/traffic/parse.js';
import { orderedRules, policyDispatch, ruleSpec, servicePolicyChains } from '../../src/traffic/policy.js';
import type { NetworkPolicy, TrafficRule } from '../../src/traffic/policy-schema.js';
import { planRuleset } from '../../src/traffic/rules.js';
import { deviceNameservers, parseNameservers, renderHosts, renderResolvConf } from '../../src/net/dns.js';
import { networkPolicy } from '../../src/traffic/networking.js';

const firstIssue = (v: unknown) => {
  const r = settingsSchema.safeParse(v);
  return r.success ? null : { path: r.error.issues[0]!.path.join('.'), message: r.error.issues[0]!.message };
};

t.test('hostile policy values are refused, naming the field', async (t) => {
  const cases: [unknown, string][] = [
    [{ exposedPorts: [{ port: 0 }] }, 'exposedPorts.0.port'],
    [{ exposedPorts: [{ protocol: 'udp' }] }, 'exposedPorts.0.port'],
    [{ exposedPorts: [{ port: 80, hostPort: 65536 }] }, 'exposedPorts.0.hostPort'],
    [{ exposedPorts: [{ port: 80, protocol: 'sctp' }] }, 'exposedPorts.0.protocol'],
    [{ exposedPorts: [{ port: 80, interfaces: ['eth0 -j ACCEPT'] }] }, 'exposedPorts.0.interfaces.0'],
    [{ exposedPorts: [{ port: 80 }, { port: 81, hostPort: 80 }] }, 'exposedPorts.1.hostPort'],
    [{ exposedPorts: [{ port: 80, extra: 1 }] }, 'exposedPorts.0'],
    [{ trafficRules: [{ id: 'a', priority: 1, direction: 'out', action: 'allow', filter: { cidr: '10.0.0.0/33' } }] }, 'trafficRules.0.filter.cidr'],
    [{ trafficRules: [{ id: 'a', priority: 1, direction: 'out', action: 'allow', filter: { cidr: '300.1.1.1/8' } }] }, 'trafficRules.0.filter.cidr'],
    [{ trafficRules: [{ id: 'a', priority: 1, direction: 'out', action: 'allow', filter: { cidr: '1.2.3.4/8 -j ACCEPT' } }] }, 'trafficRules.0.filter.cidr'],
    [{ trafficRules: [{ id: 'a', priority: 1, direction: 'out', action: 'allow', filter: { ports: [80] } }] }, 'trafficRules.0.filter.protocol'],
    [{ trafficRules: [{ id: 'a', priority: 1, direction: 'out', action: 'allow', filter: { protocol: 'tcp', ports: [70000] } }] }, 'trafficRules.0.filter.ports.0'],
    [{ trafficRules: [{ id: 'a', priority: 1, direction: 'sideways', action: 'allow' }] }, 'trafficRules.0.direction'],
    [{ trafficRules: [{ id: 'a', priority: 1, direction: 'in', action: 'accept' }] }, 'trafficRules.0.action'],
    [{ trafficRules: [{ id: 'a\nb', priority: 1, direction: 'in', action: 'drop' }] }, 'trafficRules.0.id'],
    [{ trafficRules: [{ id: 'a', priority: -1, direction: 'in', action: 'drop' }] }, 'trafficRules.0.priority'],
    [{ trafficRules: [{ id: 'a', priority: 1, direction: 'in', action: 'drop' }, { id: 'a', priority: 2, direction: 'out', action: 'drop' }] }, 'trafficRules.1.id'],
    [{ egress: 'maybe' }, 'egress'],
    [{ dnsRules: [{ domain: 'evil\n1.2.3.4 bank.example', ip: '10.0.0.1' }] }, 'dnsRules.0.domain'],
    [{ dnsRules: [{ domain: 'a b', ip: '10.0.0.1' }] }, 'dnsRules.0.domain'],
    [{ dnsRules: [{ domain: 'ok.example', ip: '10.0.0.256' }] }, 'dnsRules.0.ip'],
    [{ dnsRules: [{ domain: 'ok.example', ip: '10.0.0.1\n' }] }, 'dnsRules.0.ip'],
    [{ nameservers: ['8.8.8.8', 'x'] }, 'nameservers.1'],
  ];
  for (const [value, path] of cases) t.equal(firstIssue(value)?.path, path, `${JSON.stringify(value)} → ${path}`);
  t.equal(firstIssue({ exposedPorts: [{ port: 80 }], trafficRules: [{ id: 'web.1', priority: 0, direction: 'in', action: 'reject', filter: { cidr: '10.1.0.0/16', protocol: 'udp', ports: [53, 123] } }], egress: 'deny', dnsRules: [{ domain: 'db.local', ip: '10.0.0.5' }], nameservers: ['192.0.2.53'] }), null, 'a full policy validates');
  const parsed = settingsSchema.parse({ exposedPorts: [{ port: 80 }], trafficRules: [{ id: 'x', priority: 1, direction: 'out', action: 'drop' }] });
  t.same(parsed.exposedPorts, [{ port: 80, protocol: 'tcp' }], 'protocol defaults to tcp');
  t.same(parsed.trafficRules![0]!.filter, {}, 'an absent filter matches everything');
});

t.test('the policy is stored in its own column and read back; absent means null', async (t) => {
  const s = settingsSchema.parse({ ulLimit: 5, memoryMax: 1 << 20, exposedPorts: [{ port: 80, hostPort: 8080 }], egress: 'deny', dnsRules: [{ domain: 'a.example', ip: '10.0.0.1' }] });
  const cols = settingsToColumns(s);
  t.same(JSON.parse(cols.networkPolicy!), { exposedPorts: [{ port: 80, protocol: 'tcp', hostPort: 8080 }], egress: 'deny', dnsRules: [{ domain: 'a.example', ip: '10.0.0.1' }] });
  t.notMatch(cols.settings, 'exposedPorts', 'not in the settings column: changing the policy never restarts the service');
  t.same(columnsToSettings(cols), s, 'round trip');
  t.equal(settingsToColumns({ ulLimit: 5 }).networkPolicy, null);
});

const rule = (r: Partial<TrafficRule> & Pick<TrafficRule, 'id' | 'priority' | 'direction' | 'action'>): TrafficRule => ({ filter: {}, ...r });

t.test('rule specs, in iptables-save spelling, ordered by priority then id', async (t) => {
  t.equal(ruleSpec(rule({ id: 'a', priority: 1, direction: 'out', action: 'allow', filter: { cidr: '203.0.113.7', protocol: 'tcp', ports: [443] } })), '-d 203.0.113.7/32 -p tcp -m tcp --dport 443 -j RETURN');
  t.equal(ruleSpec(rule({ id: 'a', priority: 1, direction: 'in', action: 'drop', filter: { cidr: '10.1.2.3/16', protocol: 'udp', ports: [53, 123] } })), '-s 10.1.0.0/16 -p udp -m multiport --dports 53,123 -j DROP', 'in: the remote is the source; host bits cleared');
  t.equal(ruleSpec(rule({ id: 'a', priority: 1, direction: 'out', action: 'reject', filter: { protocol: 'tcp' } })), '-p tcp -j REJECT --reject-with tcp-reset');
  t.equal(ruleSpec(rule({ id: 'a', priority: 1, direction: 'out', action: 'reject' })), '-j REJECT --reject-with icmp-port-unreachable');
  t.equal(ruleSpec(rule({ id: 'a', priority: 1, direction: 'out', action: 'drop', filter: { protocol: 'icmp' } })), '-p icmp -j DROP');
  const rules = [rule({ id: 'z', priority: 5, direction: 'out', action: 'drop' }), rule({ id: 'b', priority: 1, direction: 'out', action: 'allow' }), rule({ id: 'a', priority: 5, direction: 'out', action: 'allow' }), rule({ id: 'i', priority: 0, direction: 'in', action: 'drop' })];
  t.same(orderedRules(rules, 'out').map((r) => r.id), ['b', 'a', 'z']);
  t.same(orderedRules(rules, 'in').map((r) => r.id), ['i']);
});

const P = (p: Partial<NetworkPolicy>): NetworkPolicy => ({ exposedPorts: [], trafficRules: [], egress: 'allow', nameservers: ['192.0.2.53'], ...p });

t.test('policy chains: only what a policy needs; DNS to the resolvers before the final drop', async (t) => {
  const id = 'svc';
  t.same(servicePolicyChains(id, '172.30.0.2', P({})), { filter: [], nat: [] }, 'no policy, no chains: no cost for services without one');
  t.same(policyDispatch().filter.rules, ['-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN'], 'replies return once, in the dispatch chain, before any jump');
  const deny = servicePolicyChains(id, '172.30.0.2', P({ egress: 'deny', trafficRules: [rule({ id: 'ok', priority: 1, direction: 'out', action: 'allow', filter: { cidr: '203.0.113.10/32' } })] }));
  t.equal(deny.filter.length, 1, 'only the out chain');
  t.same(deny.filter[0]!.rules, [
    '-d 203.0.113.10/32 -j RETURN',
    '-d 192.0.2.53/32 -p udp -m udp --dport 53 -j RETURN',
    '-d 192.0.2.53/32 -p tcp -m tcp --dport 53 -j RETURN',
    '-j DROP',
  ]);
  t.same(deny.filter[0]!.hook, { chain: 'SMD_POLICY', spec: `-s 172.30.0.2/32 -j ${policyChain(id, 'out')}` });
  t.ok(deny.filter[0]!.rebuildOnChange, 'rebuilt on change: its dropped count restarts cleanly');
  const ports = servicePolicyChains(id, '172.30.0.2', P({ exposedPorts: [{ port: 80, protocol: 'tcp', hostPort: 8080 }, { port: 5683, protocol: 'udp', interfaces: ['eth0', 'wlan0'] }] }));
  t.same(ports.nat[0]!.rules, [
    '-p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.30.0.2:80',
    '-i eth0 -p udp -m udp --dport 5683 -j DNAT --to-destination 172.30.0.2:5683',
    '-i wlan0 -p udp -m udp --dport 5683 -j DNAT --to-destination 172.30.0.2:5683',
  ]);
  t.same(ports.nat[0]!.hook, { chain: 'SMD_PORTS', spec: `-j ${portsChain(id)}` });
  for (const c of [...allServiceChains('x'.repeat(300)), 'SMD_POLICY', 'SMD_PORTS']) {
    t.ok(isSmdChain(c), `${c} is smd's`);
    t.ok(c.length <= MAX_CHAIN_NAME, `${c} fits iptables' limit`);
  }
  t.notOk(isSmdChain('SMD_POLICYX') || isSmdChain('DOCKER'), 'nobody else\'s chains');
});

t.test('one plan over filter and nat: create, converge, change, remove', async (t) => {
  const d = policyDispatch();
  const pol = P({ egress: 'deny', exposedPorts: [{ port: 80, protocol: 'tcp', hostPort: 8080 }] });
  const chains = servicePolicyChains('svc', '172.30.0.2', pol);
  const desired = { filter: [d.filter, ...chains.filter], nat: [d.nat, ...chains.nat] };
  const first = planRuleset(new Map(), desired);
  const script = first.script!;
  t.match(script, /^\*filter\n[\s\S]*COMMIT\n\*nat\n[\s\S]*COMMIT\n$/, 'both tables in one script');
  t.match(script, '-I FORWARD 1 -j SMD_POLICY');
  t.match(script, '-I PREROUTING 1 -m addrtype --dst-type LOCAL -j SMD_PORTS');
  t.match(script, `-A SMD_PORTS -j ${portsChain('svc')}`);
  // What the kernel would then hold, as iptables-save prints it.
  const save = [
    '*filter',
    ':FORWARD ACCEPT [0:0]',
    ':SMD_POLICY - [0:0]',
    `:${policyChain('svc', 'out')} - [0:0]`,
    '-A FORWARD -j SMD_POLICY',
    '-A SMD_POLICY -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN',
    `-A SMD_POLICY -s 172.30.0.2/32 -j ${policyChain('svc', 'out')}`,
    ...chains.filter[0]!.rules.map((r, i) => `[${i === chains.filter[0]!.rules.length - 1 ? '7:420' : '0:0'}] -A ${policyChain('svc', 'out')} ${r}`),
    'COMMIT',
    '*nat',
    ':PREROUTING ACCEPT [0:0]',
    ':SMD_PORTS - [0:0]',
    `:${portsChain('svc')} - [0:0]`,
    '-A PREROUTING -m addrtype --dst-type LOCAL -j SMD_PORTS',
    `-A SMD_PORTS -j ${portsChain('svc')}`,
    `-A ${portsChain('svc')} ${chains.nat[0]!.rules[0]}`,
    'COMMIT',
    '',
  ].join('\n');
  const current = parseIptablesSave(save);
  t.equal(planRuleset(current, desired).script, null, 'converged: nothing to do');
  t.equal(droppedPackets(current.get('filter')).get(policyChain('svc', 'out')), 7n, 'dropped = the DROP/REJECT counters');
  const allow = servicePolicyChains('svc', '172.30.0.2', P({ egress: 'allow', exposedPorts: [{ port: 80, protocol: 'tcp', hostPort: 8081 }] }));
  const changed = planRuleset(current, { filter: [d.filter, ...allow.filter], nat: [d.nat, ...allow.nat] }, { remove: [policyChain('svc', 'out')] });
  t.match(changed.script!, `-F ${policyChain('svc', 'out')}\n-X ${policyChain('svc', 'out')}`, 'an egress back to allow deletes the chain');
  t.match(changed.script!, `-D SMD_POLICY -s 172.30.0.2/32 -j ${policyChain('svc', 'out')}`, 'with its hook first');
  t.match(changed.script!, `:${portsChain('svc')} - [0:0]\n`, 'a changed port rebuilds the nat chain');
  t.match(changed.script!, '--dport 8081 -j DNAT');
  const removed = planRuleset(current, { filter: [], nat: [] }, { remove: allServiceChains('svc') });
  t.same(removed.removed.sort(), [policyChain('svc', 'out'), portsChain('svc')].sort(), 'removal deletes the chains of both tables');
  t.notMatch(removed.script!, 'SMD_POLICY -j', 'and keeps the dispatch chains');
});

t.test('hosts and resolv.conf of a service; the device resolvers', async (t) => {
  t.equal(renderHosts('web', [{ domain: 'db.local', ip: '10.0.0.5' }]), "# written by smd: the service's dnsRules (services.configure changes it)\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tweb\n10.0.0.5\tdb.local\n");
  t.equal(renderResolvConf(['192.0.2.1', '192.0.2.2']).split('\n').slice(1).join('\n'), 'nameserver 192.0.2.1\nnameserver 192.0.2.2\n');
  t.same(parseNameservers('# c\nnameserver 127.0.0.53\nnameserver 10.0.0.1 # lan\nnameserver ::1\nnameserver 10.0.0.1\nsearch x\n'), ['10.0.0.1'], 'IPv4, no loopback, no duplicates');
  const files: Record<string, string> = { '/etc/resolv.conf': 'nameserver 127.0.0.53\n', '/run/systemd/resolve/resolv.conf': 'nameserver 192.0.2.9\n' };
  t.same(deviceNameservers((p) => files[p] ?? null), ['192.0.2.9'], "behind systemd-resolved's stub: its upstream servers");
  t.same(deviceNameservers(() => null), []);
  t.same(networkPolicy({ egress: 'deny' }, () => ['192.0.2.9']), { exposedPorts: [], trafficRules: [], egress: 'deny', nameservers: ['192.0.2.9'] });
  t.same(networkPolicy({ nameservers: ['192.0.2.1'] }, () => ['192.0.2.9']).nameservers, ['192.0.2.1'], 'configured resolvers win');
});

t.test('a host port belongs to one service', async (t) => {
  const rowOf = (id: string, s: object) => ({ id, ...settingsToColumns(settingsSchema.parse(s)) }) as unknown as Row;
  const rows = [rowOf('a', { exposedPorts: [{ port: 80, hostPort: 8080 }] }), rowOf('b', { ulLimit: 1 })];
  t.doesNotThrow(() => checkPortConflicts(rows, 'c', settingsSchema.parse({ exposedPorts: [{ port: 8080, protocol: 'udp' }] })), 'another protocol is another port');
  t.doesNotThrow(() => checkPortConflicts(rows, 'a', settingsSchema.parse({ exposedPorts: [{ port: 81, hostPort: 8080 }] })), 'a service may change its own');
  try {
    checkPortConflicts(rows, 'c', settingsSchema.parse({ exposedPorts: [{ port: 8080 }] }));
    t.fail('expected CONFLICT');
  } catch (err) {
    t.ok(isSmError(err, 'CONFLICT'), 'CONFLICT');
    t.match((err as Error).message, 'host port 8080/tcp is already exposed by a');
  }
});

t.test('smctl services get shows the policy in readable lines', async (t) => {
  const { policyLines } = await import('../../src/cli/services.js');
  t.same(policyLines({ exposedPorts: [{ port: 8080, protocol: 'tcp', hostPort: 8088 }, { port: 53, protocol: 'udp', interfaces: ['eth0'] }], egress: 'deny', trafficRules: [{ id: 'b', priority: 20, direction: 'in', action: 'drop' }, { id: 'a', priority: 10, direction: 'out', action: 'allow', filter: { cidr: '203.0.113.0/24', protocol: 'tcp', ports: [80, 443] } }], dnsRules: [{ domain: 'db.local', ip: '10.0.0.5' }] }), {
    ports: '8088/tcp -> 8080, 53/udp -> 53 (eth0)',
    egress: 'deny',
    rules: '10 a: out allow tcp 203.0.113.0/24:80,443; 20 b: in drop all any',
    dns: 'db.local=10.0.0.5',
  });
  t.same(policyLines({}), { ports: '-', egress: 'allow', rules: '-', dns: '-' }, 'no policy');
});

t.test("an exposed port without port takes the image config's ExposedPorts", async (t) => {
  const s = (v: object) => settingsSchema.parse(v);
  t.same(resolvePorts(s({ exposedPorts: [{ hostPort: 80 }] }), ['8080/tcp', '53/udp']).exposedPorts, [{ protocol: 'tcp', hostPort: 80, port: 8080 }], 'the only tcp port');
  t.same(resolvePorts(s({ exposedPorts: [{ hostPort: 443, protocol: 'tcp' }] }), ['80/tcp', '443/tcp']).exposedPorts![0]!.port, 443, 'the one equal to hostPort');
  t.equal(resolvePorts(s({ exposedPorts: [{ hostPort: 5353, protocol: 'udp' }] }), ['53/udp']).exposedPorts![0]!.port, 53, 'by protocol');
  t.throws(() => resolvePorts(s({ exposedPorts: [{ hostPort: 5353, protocol: 'udp' }] }), ['53']), { code: 'INVALID_IMAGE' }, 'a bare number is tcp');
  t.throws(() => resolvePorts(s({ exposedPorts: [{ port: 1 }, { hostPort: 81 }] }), ['80/tcp', '8080/tcp']), { code: 'INVALID_IMAGE', message: /exposedPorts\.1\.port: .*several tcp ports \(80, 8080\)/ });
  t.throws(() => resolvePorts(s({ exposedPorts: [{ hostPort: 81 }] }), undefined), { code: 'INVALID_IMAGE', message: /no tcp port/ });
  const explicit = s({ exposedPorts: [{ port: 1 }] });
  t.equal(resolvePorts(explicit, undefined), explicit, 'explicit ports are left alone');
});
