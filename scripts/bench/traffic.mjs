#!/usr/bin/env node
// Benchmark of traffic sampling against real iptables inside scripts/sandbox.
//
//   npx tsc -p . && node scripts/bench/traffic.mjs
//
// Runs itself inside the sandbox (re-exec through scripts/sandbox when SMD_SANDBOX_DIR is unset), so
// the chains it creates live in the sandbox's private network namespace only.
// Measures one full sample (one `iptables-save -c`, parse, totals, plan, event) of TrafficMonitor
// with 1, 50 and 200 service chains (a service has two: IN and OUT; so 1, 25, 100 services, plus the
// 2 system chains; and 400 service chains as an extra point), against the per-chain
// listing of the reference system (one `iptables -L CHAIN -v -x -n` per chain), and the CPU share
// of sampling at the default interval.
// Then, with the 200 services: the cost of one sample and of one rule change (one service's
// setting changed: a restore of its chains) without any network policy (today's figures, the
// baseline) and with every service having 2 exposed ports, 5 traffic rules and egress deny.
// Prints one JSON object: {name:"traffic", figures:[{name, value, unit, baseline?, ratio?, target?}]}.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { figure, median } from './lib/stats.mjs';
import { insideSandbox } from './lib/sandbox.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '../..');

await insideSandbox(import.meta.url, main);

/** CPU time (ms) of a process and its waited-for children, from /proc/<pid>/stat. */
function processCpuMs(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  // fields after the command: state=0 ... utime=11 stime=12 cutime=13 cstime=14 (0-based from state)
  const ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
}

/**
 * CPU time of this process, its waited-for children, and its live children with theirs: the
 * shell smd keeps for sampling (src/exec/shell.ts) reaps iptables-save, so that CPU is the shell's.
 */
function cpuMs() {
  let ms = processCpuMs('self');
  for (const task of readdirSync('/proc/self/task')) {
    for (const pid of readFileSync(`/proc/self/task/${task}/children`, 'utf8').split(' ').filter(Boolean)) {
      try {
        ms += processCpuMs(pid);
      } catch {
        // exited meanwhile: its time is in our cutime once reaped
      }
    }
  }
  return ms;
}

async function main() {
  const { TrafficMonitor } = await import(join(root, 'dist/traffic/monitor.js'));
  const { Iptables } = await import(join(root, 'dist/traffic/iptables.js'));
  const { openDatabase } = await import(join(root, 'dist/db/database.js'));
  const { parseConfig } = await import(join(root, 'dist/config/config.js'));
  const { EventBus } = await import(join(root, 'dist/events/bus.js'));
  const { silentLogger } = await import(join(root, 'dist/log.js'));
  const { AlertStore } = await import(join(root, 'dist/alerts/store.js'));
  const runs = Number(process.env.BENCH_RUNS ?? 30);
  const listRuns = Number(process.env.BENCH_LIST_RUNS ?? 3);
  // service chains -> services
  const sizes = [
    [1, 1],
    [50, 25],
    [200, 100],
    [400, 200],
  ];
  const ef = (await import('node:util')).promisify((await import('node:child_process')).execFile);

  const dir = mkdtempSync(join(tmpdir(), 'smd-bench-traffic-'));
  const opened = openDatabase(join(dir, 'smd.db'));
  const config = parseConfig({ traffic: { subnet: '172.30.0.0/16', sampleIntervalMs: 10_000 } }).traffic;
  const bus = new EventBus();
  const mon = new TrafficMonitor({ db: opened.db, bus, alerts: new AlertStore({ db: opened.db, bus }), config, logger: silentLogger });
  const ipt = new Iptables();
  await mon.start();
  if (!mon.health().ok) throw new Error(`iptables not usable: ${mon.health().detail}`);
  const figures = [];
  let added = 0;
  // The floor: what starting any program costs from this node process on this machine.
  const spawnTimes = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await ef('/bin/true', []);
    spawnTimes.push(performance.now() - t0);
  }
  figures.push(figure('spawn_floor_ms_exec_true', median(spawnTimes), 'ms'));
  for (const [svcChains, n] of sizes) {
    while (added < n) {
      const i = added++;
      await mon.addService(`bench-${i}`, `172.30.${(i + 2) >> 8}.${(i + 2) & 255}`, { ulLimit: 1e12, dlLimit: 1e12, ulSpeed: null, dlSpeed: null });
    }
    const chains = mon.get().map((r) => r.chain);
    for (let i = 0; i < 3; i++) await mon.sampleNow(); // warm-up
    const times = [];
    const cpu0 = cpuMs();
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      await mon.sampleNow();
      times.push(performance.now() - t0);
    }
    const cpuPerSample = (cpuMs() - cpu0) / runs;
    const sample = median(times);
    const list = [];
    for (let r = 0; r < listRuns; r++) {
      const t0 = performance.now();
      for (const c of chains) await ipt.listChain(c);
      list.push(performance.now() - t0);
    }
    const listing = median(list);
    const key = svcChains === 200;
    const label = `${svcChains}_service_chains`;
    figures.push(
      figure(`sample_ms_${label}`, sample, 'ms', { baseline: listing, ...(key ? { target: '<= 15' } : {}) }),
      figure(`speedup_vs_per_chain_listing_${label}`, listing / sample, 'x', key ? { target: '>= 50' } : {}),
      figure(`cpu_share_at_${config.sampleIntervalMs}ms_interval_${label}`, (cpuPerSample / config.sampleIntervalMs) * 100, '%', key ? { target: '<= 1' } : {}),
    );
    process.stderr.write(`traffic bench: ${label} (${chains.length} chains incl. system): sample ${sample.toFixed(1)} ms, per-chain listing ${listing.toFixed(0)} ms\n`);
  }
  figures.push(...(await policyFigures(mon, added, runs)));
  await mon.reconcile(new Set());
  await mon.stop();
  opened.close();
  rmSync(dir, { recursive: true, force: true });
  process.stdout.write(JSON.stringify({ name: 'traffic', figures }) + '\n');
}

/** Median of `runs` timings of `fn`. */
async function timed(runs, fn) {
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn(i);
    times.push(performance.now() - t0);
  }
  return median(times);
}

/**
 * Sample and rule-change cost for `n` services, without a policy and with one each (2 exposed
 * ports, 5 rules, egress deny). A rule change without a policy is one service's chains rebuilt
 * (a changed address); with one, a changed rule of one service (its policy chain rebuilt). Both
 * are one iptables-save and one iptables-restore.
 */
async function policyFigures(mon, n, runs) {
  const addr = (i) => `172.30.${(i + 2) >> 8}.${(i + 2) & 255}`;
  const limits = { ulLimit: 1e12, dlLimit: 1e12, ulSpeed: null, dlSpeed: null };
  const plainSample = await timed(runs, () => mon.sampleNow());
  // Today's rule change: one service's chains rebuilt (here by moving it between two addresses).
  const plainChange = await timed(runs, (k) => mon.addService('bench-0', `172.30.250.${1 + (k % 2)}`, limits));
  await mon.addService('bench-0', addr(0), limits);
  const policy = (i, k = 0) => ({
    exposedPorts: [
      { port: 80, protocol: 'tcp', hostPort: 10000 + 2 * i },
      { port: 5683, protocol: 'udp', hostPort: 10001 + 2 * i },
    ],
    trafficRules: [
      { id: 'cloud', priority: 10, direction: 'out', action: 'allow', filter: { cidr: '203.0.113.0/24', protocol: 'tcp', ports: [443, 8883] } },
      { id: 'ntp', priority: 20, direction: 'out', action: 'allow', filter: { protocol: 'udp', ports: [123] } },
      { id: 'lan', priority: 30, direction: 'out', action: 'reject', filter: { cidr: `10.${k % 250}.0.0/16` } },
      { id: 'ops', priority: 10, direction: 'in', action: 'allow', filter: { cidr: '198.51.100.0/24' } },
      { id: 'bad', priority: 20, direction: 'in', action: 'drop', filter: { cidr: '192.0.2.0/24', protocol: 'tcp' } },
    ],
    egress: 'deny',
    nameservers: ['192.0.2.53'],
  });
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await mon.addService(`bench-${i}`, addr(i), { ...limits, policy: policy(i) });
  const applyAll = performance.now() - t0;
  for (let i = 0; i < 3; i++) await mon.sampleNow();
  const policySample = await timed(runs, () => mon.sampleNow());
  const policyChange = await timed(runs, (k) => mon.addService('bench-0', addr(0), { ...limits, policy: policy(0, k + 1) }));
  const [save] = [await (await import('node:util')).promisify((await import('node:child_process')).execFile)('iptables-save', ['-c'])];
  const rules = save.stdout.split('\n').filter((l) => /^(\[\d+:\d+\] )?-A /.test(l)).length;
  process.stderr.write(`traffic bench: ${n} services with policy (${rules} rules in all tables): sample ${policySample.toFixed(1)} ms (without ${plainSample.toFixed(1)}), one rule change ${policyChange.toFixed(1)} ms (without ${plainChange.toFixed(1)})\n`);
  return [
    figure(`policy_sample_ms_${n}_services_2_ports_5_rules`, policySample, 'ms', { baseline: plainSample }),
    figure(`policy_rule_change_ms_${n}_services_2_ports_5_rules`, policyChange, 'ms', { baseline: plainChange }),
    figure(`policy_apply_all_ms_${n}_services`, applyAll, 'ms'),
    figure(`policy_rules_total_${n}_services`, rules, 'rules'),
  ];
}
