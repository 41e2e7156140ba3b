import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { countingBytes, parseIptablesSave, rulesOf, tokenize } from '../../src/traffic/parse.js';
import { chainHash, isSmdChain, MAX_CHAIN_NAME, serviceChain, systemChain } from '../../src/traffic/naming.js';
import { nextPeriodStart, periodStart } from '../../src/traffic/period.js';
import { observe, rebase, startTotal, totalOf, type ChainTotal } from '../../src/traffic/counters.js';
import { forwardChainRules, planRules, serviceChainRules, systemChainRules } from '../../src/traffic/rules.js';
import { tbfArgs } from '../../src/traffic/shaper.js';
import { isSmError } from '../../src/errors.js';

const fixture = (name: string) => readFileSync(fileURLToPath(new URL(`fixtures/${name}`, import.meta.url)), 'utf8');

t.test('parser: nf_tables backend output recorded with iptables 1.8.9', async (t) => {
  const rs = parseIptablesSave(fixture('nft-save.txt'));
  t.same([...rs.keys()], ['filter', 'nat']);
  const filter = rs.get('filter')!;
  t.same([...filter.chains.keys()], ['INPUT', 'FORWARD', 'OUTPUT', 'SMD_ABCDEF012345_IN', 'SMD_ABCDEF012345_OUT', 'SMD_SYSTEM_IN', 'SMD_SYSTEM_OUT']);
  t.equal(filter.chains.get('INPUT')!.policy, 'ACCEPT');
  t.equal(filter.chains.get('SMD_SYSTEM_IN')!.policy, '-');
  const big = rulesOf(filter, 'SMD_ABCDEF012345_IN')[0]!;
  t.equal(big.packets, 9007199254740993n, 'packets beyond 2^53 are exact');
  t.equal(big.bytes, 18446744073709551615n, 'bytes up to 2^64-1 are exact');
  t.equal(big.spec, '-d 172.30.0.2/32 -m comment --comment "smd svc a b"');
  t.equal(big.target, null);
  t.same(tokenize(big.spec), ['-d', '172.30.0.2/32', '-m', 'comment', '--comment', 'smd svc a b']);
  const fwd = rulesOf(filter, 'FORWARD');
  t.same(fwd.map((r) => r.target), ['SMD_ABCDEF012345_OUT', 'SMD_ABCDEF012345_IN']);
  const sys = rulesOf(filter, 'SMD_SYSTEM_IN');
  t.same(sys.map((r) => [r.spec, r.target, r.bytes]), [
    ['-s 127.0.0.0/8 -j RETURN', 'RETURN', 0n],
    ['', null, 300n],
  ]);
  const bytes = countingBytes(filter);
  t.equal(bytes.get('SMD_SYSTEM_IN'), 300n);
  t.equal(bytes.get('SMD_SYSTEM_OUT'), 4200n, 'RETURN rules are not counted');
  t.equal(bytes.get('SMD_ABCDEF012345_OUT'), 0n, 'a DROP rule is not a counting rule');
  t.equal(bytes.get('SMD_ABCDEF012345_IN'), 18446744073709551615n);
  t.equal(bytes.has('NOPE'), false);
  t.equal(rs.get('nat')!.rules[0]!.spec, '-s 172.30.0.0/16 ! -o smd0 -j MASQUERADE');
});

t.test('parser: legacy backend output and the nf_tables warning line', async (t) => {
  const rs = parseIptablesSave('# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n' + fixture('legacy-save.txt'));
  t.same(rulesOf(rs.get('filter'), 'SMD_SYSTEM_IN').map((r) => r.spec), ['-s 10.0.0.0/8 -j RETURN', '']);
  t.equal(rs.get('filter')!.chains.get('FORWARD')!.policy, 'ACCEPT');
});

t.test('parser: old in-rule counters, empty input, malformed lines', async (t) => {
  const rs = parseIptablesSave('*filter\n:X - [1:2]\n-A X -d 1.2.3.4/32 -c 5 600\n-A X -j RETURN\nCOMMIT\n');
  const rules = rulesOf(rs.get('filter'), 'X');
  t.same(rules.map((r) => [r.spec, r.packets, r.bytes]), [
    ['-d 1.2.3.4/32', 5n, 600n],
    ['-j RETURN', 0n, 0n],
  ]);
  t.equal(rs.get('filter')!.chains.get('X')!.bytes, 2n);
  t.equal(parseIptablesSave('').size, 0);
  for (const bad of ['-A X\n', '*filter\n[1:x] -A X\n', '*filter\n:X - [a:b]\n', '*filter\nbogus\n']) {
    try {
      parseIptablesSave(bad);
      t.fail(`accepted ${JSON.stringify(bad)}`);
    } catch (err) {
      t.ok(isSmError(err, 'INTERNAL'), `refused ${JSON.stringify(bad)}`);
    }
  }
});

t.test('chain names are stable, distinct and short enough', async (t) => {
  const long = 'com.example.' + 'x'.repeat(300);
  t.equal(serviceChain('svc', 'in'), serviceChain('svc', 'in'));
  t.equal(serviceChain('svc', 'in'), `SMD_${chainHash('svc')}_IN`);
  t.match(serviceChain(long, 'out'), /^SMD_[0-9A-F]{12}_OUT$/);
  t.ok(serviceChain(long, 'out').length <= MAX_CHAIN_NAME);
  t.not(serviceChain('a', 'in'), serviceChain('b', 'in'));
  t.match(chainHash('svc'), /^[0-9A-F]{12}$/, 'hash is 12 upper-case hex chars');
  t.equal(systemChain('in'), 'SMD_SYSTEM_IN');
  t.ok(isSmdChain(serviceChain(long, 'in')) && isSmdChain('SMD_SYSTEM_OUT'));
  t.notOk(isSmdChain('SMD_OTHER') || isSmdChain('DOCKER') || isSmdChain('SMD_abcdef012345_IN'));
});

t.test('periods are UTC minute/hour/day/month', async (t) => {
  const at = Date.UTC(2024, 1, 29, 23, 59, 59, 999); // leap day, last ms
  t.equal(periodStart(at, 'minute'), Date.UTC(2024, 1, 29, 23, 59));
  t.equal(periodStart(at, 'hour'), Date.UTC(2024, 1, 29, 23));
  t.equal(periodStart(at, 'day'), Date.UTC(2024, 1, 29));
  t.equal(periodStart(at, 'month'), Date.UTC(2024, 1, 1));
  t.equal(nextPeriodStart(at, 'minute'), Date.UTC(2024, 2, 1, 0, 0));
  t.equal(nextPeriodStart(at, 'day'), Date.UTC(2024, 2, 1));
  t.equal(nextPeriodStart(at, 'month'), Date.UTC(2024, 2, 1));
  t.equal(nextPeriodStart(Date.UTC(2023, 11, 31, 12), 'month'), Date.UTC(2024, 0, 1), 'year wraps');
  t.equal(nextPeriodStart(Date.UTC(2023, 11, 31, 12), 'day'), Date.UTC(2024, 0, 1));
  const b = Date.UTC(2024, 5, 1);
  t.equal(periodStart(b, 'day'), b, 'a boundary belongs to the period it starts');
  t.equal(periodStart(b - 1, 'day'), Date.UTC(2024, 4, 31));
  t.equal(nextPeriodStart(b, 'hour'), b + 3_600_000);
});

t.test('totals: stored + counter - offset, resets never go backwards, periods restart', async (t) => {
  const P = 1000;
  let s: ChainTotal = startTotal(5000n, P);
  t.equal(totalOf(s), 5000n, 'before any sample: the stored value');
  s = observe(s, 700n, P);
  t.equal(totalOf(s), 5000n, 'first sample after a restart: the counter is the offset');
  s = observe(s, 1700n, P);
  t.equal(totalOf(s), 6000n);
  s = observe(s, 200n, P);
  t.equal(totalOf(s), 6200n, 'a lower counter is a reset: continue from the total');
  s = observe(s, 200n, P);
  t.equal(totalOf(s), 6200n);
  s = rebase(s);
  t.equal(totalOf(s), 6200n, 'rebase keeps the total');
  s = observe(s, 50n, P);
  t.equal(totalOf(s), 6250n, 'after smd re-created the chain the fresh counter counts fully');
  s = observe(s, 80n, 2000);
  t.equal(totalOf(s), 0n, 'a new period starts at 0');
  s = observe(s, 180n, 2000);
  t.equal(totalOf(s), 100n);
  const huge = 2n ** 64n - 1n;
  let h = startTotal(2n ** 60n, P);
  h = observe(h, huge - 10n, P);
  h = observe(h, huge, P);
  t.equal(totalOf(h), 2n ** 60n + 10n, 'exact beyond 2^53');
  h = observe(h, 0n, P);
  t.equal(totalOf(h), 2n ** 60n + 10n, 'wrap to 0 is a reset, no underflow');
});

t.test('totals after a crash resume from the counter persisted with the stored value', async (t) => {
  const P = 1000;
  // Persisted: total 5000 when the kernel counter was 700; smd was killed; the chain kept counting.
  let s = startTotal(5000n, P, 700n);
  s = observe(s, 900n, P);
  t.equal(totalOf(s), 5200n, 'the 200 bytes counted after the last persist are kept');
  s = observe(s, 1000n, P);
  t.equal(totalOf(s), 5300n);
  // Persisted at counter 700, but the counter was reset meanwhile (a reboot): all of it is new.
  let r = startTotal(5000n, P, 700n);
  r = observe(r, 40n, P);
  t.equal(totalOf(r), 5040n, 'a lower counter after a restart counts from zero, never backwards');
  // Rows written before the counter was stored: the first counter is the offset, as before.
  let legacy = startTotal(5000n, P, null);
  legacy = observe(legacy, 900n, P);
  t.equal(totalOf(legacy), 5000n);
});

t.test('rules: dispatch, service and system chains, local subnets uncounted', async (t) => {
  const fwd = forwardChainRules('in', ['10.0.0.0/8', '192.168.1.7']);
  t.same(fwd.rules, ['-s 10.0.0.0/8 -j RETURN', '-s 192.168.1.7/32 -j RETURN']);
  t.same(fwd.hook, { chain: 'FORWARD', spec: '-j SMD_FORWARD_IN' });
  t.same(forwardChainRules('out', ['10.0.0.0/8']).rules, ['-d 10.0.0.0/8 -j RETURN']);
  const inc = serviceChainRules('SMD_A_IN', 'in', '172.30.0.5', false);
  t.same(inc.rules, ['-d 172.30.0.5/32']);
  t.same(inc.hook, { chain: 'SMD_FORWARD_IN', spec: '-d 172.30.0.5/32 -j SMD_A_IN' });
  const out = serviceChainRules('SMD_A_OUT', 'out', '172.30.0.5', true);
  t.same(out.rules, ['-s 172.30.0.5/32 -j DROP', '-s 172.30.0.5/32']);
  t.same(out.hook, { chain: 'SMD_FORWARD_OUT', spec: '-s 172.30.0.5/32 -j SMD_A_OUT' });
  const sys = systemChainRules('out', ['127.0.0.0/8']);
  t.same(sys.rules, ['-o lo -j RETURN', '-d 127.0.0.0/8 -j RETURN', '']);
  t.same(sys.hook, { chain: 'OUTPUT', spec: '-j SMD_SYSTEM_OUT' });
  t.ok(isSmdChain('SMD_FORWARD_IN') && isSmdChain('SMD_FORWARD_OUT'), 'dispatch chains are smd chains');
});

t.test('plan: create, converge, toggle DROP in place, repair hooks, remove others', async (t) => {
  const local = ['10.0.0.0/8'];
  const A = 'SMD_AAAAAAAAAAAA_IN';
  const desired = [systemChainRules('in', local), forwardChainRules('in', local), serviceChainRules(A, 'in', '172.30.0.2', false)];
  const first = planRules(undefined, desired);
  t.same(first.rebuilt, ['SMD_SYSTEM_IN', 'SMD_FORWARD_IN', A]);
  t.equal(
    first.script,
    [
      '*filter',
      ':SMD_SYSTEM_IN - [0:0]',
      ':SMD_FORWARD_IN - [0:0]',
      `:${A} - [0:0]`,
      '-A SMD_SYSTEM_IN -i lo -j RETURN',
      '-A SMD_SYSTEM_IN -s 10.0.0.0/8 -j RETURN',
      '-A SMD_SYSTEM_IN',
      '-A SMD_FORWARD_IN -s 10.0.0.0/8 -j RETURN',
      `-A ${A} -d 172.30.0.2/32`,
      '-I INPUT 1 -j SMD_SYSTEM_IN',
      '-I FORWARD 1 -j SMD_FORWARD_IN',
      `-A SMD_FORWARD_IN -d 172.30.0.2/32 -j ${A}`,
      'COMMIT',
      '',
    ].join('\n'),
    'jumps to service chains come after the RETURN rules of their dispatch chain',
  );
  // What iptables-save prints after applying it (plus someone else's chain and rule, and an
  // smd chain that is not wanted).
  const saved = (extra: { fwd?: string; a?: string } = {}) =>
    parseIptablesSave(
      [
        '*filter',
        ':INPUT ACCEPT [0:0]',
        ':FORWARD DROP [0:0]',
        ':OUTPUT ACCEPT [0:0]',
        ':DOCKER - [0:0]',
        `:${A} - [0:0]`,
        ':SMD_BBBBBBBBBBBB_OUT - [0:0]',
        ':SMD_FORWARD_IN - [0:0]',
        ':SMD_SYSTEM_IN - [0:0]',
        '[1:2] -A INPUT -j SMD_SYSTEM_IN',
        '[5:6] -A FORWARD -j SMD_FORWARD_IN',
        '[0:0] -A FORWARD -s 172.30.0.9/32 -j SMD_BBBBBBBBBBBB_OUT',
        '[0:0] -A FORWARD -j DOCKER',
        extra.a ?? '',
        `[9:900] -A ${A} -d 172.30.0.2/32`,
        '[0:0] -A SMD_FORWARD_IN -s 10.0.0.0/8 -j RETURN',
        `[9:900] -A SMD_FORWARD_IN -d 172.30.0.2/32 -j ${A}`,
        extra.fwd ?? '',
        '[0:0] -A SMD_SYSTEM_IN -i lo -j RETURN',
        '[0:0] -A SMD_SYSTEM_IN -s 10.0.0.0/8 -j RETURN',
        '[3:4] -A SMD_SYSTEM_IN',
        'COMMIT',
      ]
        .filter(Boolean)
        .join('\n'),
    ).get('filter');
  t.same(planRules(saved(), desired), { script: null, rebuilt: [], removed: [] }, 'nothing to do when it matches');

  const blocked = [desired[0]!, desired[1]!, serviceChainRules(A, 'in', '172.30.0.2', true)];
  const block = planRules(saved(), blocked);
  t.same(block.rebuilt, [], 'blocking keeps the chain and its counters');
  t.equal(block.script, `*filter\n-I ${A} 1 -d 172.30.0.2/32 -j DROP\nCOMMIT\n`);
  const unblock = planRules(saved({ a: `[0:0] -A ${A} -d 172.30.0.2/32 -j DROP` }), desired);
  t.equal(unblock.script, `*filter\n-D ${A} -d 172.30.0.2/32 -j DROP\nCOMMIT\n`);
  t.same(unblock.rebuilt, []);

  const moved = [desired[0]!, desired[1]!, serviceChainRules(A, 'in', '172.30.0.3', false)];
  const mv = planRules(saved(), moved);
  t.same(mv.rebuilt, [A], 'a new address rebuilds the chain');
  t.match(mv.script!, new RegExp(`-D SMD_FORWARD_IN -d 172\\.30\\.0\\.2/32 -j ${A}\n`));
  t.match(mv.script!, new RegExp(`-A SMD_FORWARD_IN -d 172\\.30\\.0\\.3/32 -j ${A}\n`));

  const dup = planRules(saved({ fwd: `[0:0] -A SMD_FORWARD_IN -d 172.30.0.2/32 -j ${A}` }), desired);
  t.equal(dup.script, `*filter\n-D SMD_FORWARD_IN -d 172.30.0.2/32 -j ${A}\nCOMMIT\n`, 'a duplicate jump is deleted (once)');

  const wider = [desired[0]!, forwardChainRules('in', [...local, '192.168.0.0/16']), desired[2]!];
  const w = planRules(saved(), wider);
  t.same(w.rebuilt, ['SMD_FORWARD_IN'], 'new local subnets rebuild only the dispatch chain; service counters stay');
  t.equal(
    w.script,
    [
      '*filter',
      ':SMD_FORWARD_IN - [0:0]',
      '-A SMD_FORWARD_IN -s 10.0.0.0/8 -j RETURN',
      '-A SMD_FORWARD_IN -s 192.168.0.0/16 -j RETURN',
      `-A SMD_FORWARD_IN -d 172.30.0.2/32 -j ${A}`,
      'COMMIT',
      '',
    ].join('\n'),
    'the flushed jumps are re-added after the RETURN rules, never deleted twice',
  );

  const rm = planRules(saved(), desired, { removeOthers: true });
  t.same(rm.removed, ['SMD_BBBBBBBBBBBB_OUT'], 'only smd chains that are not wanted; DOCKER is left alone');
  t.equal(rm.script, '*filter\n-D FORWARD -s 172.30.0.9/32 -j SMD_BBBBBBBBBBBB_OUT\n-F SMD_BBBBBBBBBBBB_OUT\n-X SMD_BBBBBBBBBBBB_OUT\nCOMMIT\n');
  const one = planRules(saved(), [desired[0]!, desired[1]!], { remove: [A] });
  t.equal(one.script, `*filter\n-D SMD_FORWARD_IN -d 172.30.0.2/32 -j ${A}\n-F ${A}\n-X ${A}\nCOMMIT\n`, 'removing a service chain removes its jump first');
  t.same(planRules(saved(), desired, { remove: ['SMD_NOPE_IN'] }).script, null, 'removing an absent chain is a no-op');
});

t.test('plan: the per-service layout of earlier versions moves to the dispatch chains', async (t) => {
  const A = 'SMD_AAAAAAAAAAAA_IN';
  const old = parseIptablesSave(
    [
      '*filter',
      ':INPUT ACCEPT [0:0]',
      ':FORWARD ACCEPT [0:0]',
      ':OUTPUT ACCEPT [0:0]',
      `:${A} - [0:0]`,
      `[9:900] -A FORWARD -d 172.30.0.2/32 -j ${A}`,
      `[0:0] -A ${A} -s 10.0.0.0/8 -j RETURN`,
      `[9:900] -A ${A} -d 172.30.0.2/32`,
      'COMMIT',
    ].join('\n'),
  ).get('filter');
  const plan = planRules(old, [forwardChainRules('in', ['10.0.0.0/8']), serviceChainRules(A, 'in', '172.30.0.2', false)]);
  t.same(plan.rebuilt, ['SMD_FORWARD_IN', A], 'the service chain is rebuilt (its total is rebased, never lost)');
  t.equal(
    plan.script,
    [
      '*filter',
      ':SMD_FORWARD_IN - [0:0]',
      `:${A} - [0:0]`,
      `-D FORWARD -d 172.30.0.2/32 -j ${A}`,
      '-A SMD_FORWARD_IN -s 10.0.0.0/8 -j RETURN',
      `-A ${A} -d 172.30.0.2/32`,
      '-I FORWARD 1 -j SMD_FORWARD_IN',
      `-A SMD_FORWARD_IN -d 172.30.0.2/32 -j ${A}`,
      'COMMIT',
      '',
    ].join('\n'),
  );
});

t.test('tbf arguments', async (t) => {
  t.same(tbfArgs('smdh1', 400_000), ['qdisc', 'replace', 'dev', 'smdh1', 'root', 'tbf', 'rate', '3200000bit', 'burst', '16384', 'latency', '200ms']);
  t.equal(tbfArgs('x', 10_000_000)[9], '200000', 'burst grows with the rate');
});

t.test('smctl traffic table', async (t) => {
  const { renderTraffic } = await import('../../src/cli/traffic.js');
  const text = renderTraffic([
    { chain: 'SMD_SYSTEM_IN', serviceId: null, direction: 'in', bytes: 2048, limit: null, blocked: false, periodStart: Date.UTC(2030, 0, 1) },
    { chain: 'SMD_AAAAAAAAAAAA_OUT', serviceId: 'svc', direction: 'out', bytes: 5 * 1024 * 1024, limit: 4 * 1024 * 1024, blocked: true, dropped: 17, periodStart: Date.UTC(2030, 0, 1) },
  ]);
  t.match(text, /^SERVICE\s+DIRECTION\s+BYTES\s+LIMIT\s+BLOCKED\s+DROPPED\s+SINCE\s+CHAIN/);
  t.match(text, /\(system\)\s+in \(download\)\s+2\.0 KiB\s+-\s+-\s+2030-01-01T00:00:00Z/);
  t.match(text, /svc\s+out \(upload\)\s+5\.0 MiB\s+4\.0 MiB\s+BLOCKED\s+17 pkt/, 'dropped packets of the policy');
});
