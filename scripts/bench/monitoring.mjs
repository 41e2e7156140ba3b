#!/usr/bin/env node
// Benchmark of one monitoring sample (src/monitoring/monitor.ts) against the real user manager of
// scripts/sandbox, with 1, 50 and 200 running units. Baseline, measured in the same run: reading
// the same properties with one `systemctl --user show` per unit.
//
//   npx tsc -p . && node scripts/bench/monitoring.mjs       (SMD_DIST=<dir> to use another build)
//
// Also the CPU a sample costs — this process (the monitor) plus systemd and dbus-daemon, which
// answer its one call — and what that is as a share of one CPU at the default 10 s interval.
//
// Prints one JSON object: {name:"monitoring", figures:[{name, value, unit, baseline?, ratio?, target?}]}.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { figure, median } from './lib/stats.mjs';
import { insideSandbox } from './lib/sandbox.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '../..');

await insideSandbox(import.meta.url, main);

async function main() {
  const dist = process.env.SMD_DIST ?? join(root, 'dist');
  const { SystemdManager } = await import(join(dist, 'systemd/manager.js'));
  const { silentLogger } = await import(join(dist, 'log.js'));
  const { openDatabase } = await import(join(dist, 'db/database.js'));
  const { services } = await import(join(dist, 'db/schema.js'));
  const { Monitor } = await import(join(dist, 'monitoring/monitor.js'));
  const run = promisify(execFile);
  const runs = Number(process.env.BENCH_RUNS ?? 10);
  const sizes = (process.env.BENCH_SIZES ?? '1,50,200').split(',').map(Number);

  const mgr = new SystemdManager({ bus: process.env.DBUS_SESSION_BUS_ADDRESS, unitDir: process.env.SMD_SANDBOX_UNIT_DIR, logger: silentLogger });
  await mgr.connect();
  if (!mgr.health().ok) throw new Error(`systemd not reachable: ${mgr.health().detail}`);
  const dir = mkdtempSync(join(tmpdir(), 'smd-bench-mon-'));
  const { db, close } = openDatabase(join(dir, 'smd.db'));
  const figures = [];
  let started = 0;
  const unitName = (i) => `smd-benchmon${i}.service`;
  // utime+stime of a process, ms (clock ticks of 10 ms on this kernel: summed over many samples).
  const ticksMs = (pid) => {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) * 10;
  };
  const helpers = [process.env.SMD_SANDBOX_SYSTEMD_PID, process.env.SMD_SANDBOX_DBUS_PID].filter(Boolean).map(Number);
  const DEFAULT_INTERVAL_MS = 10_000;
  try {
    for (const n of sizes) {
      // Grow the set of running units (and service rows) to n.
      for (; started < n; started++) {
        const name = unitName(started);
        await mgr.writeUnit(name, `[Service]\nType=exec\nExecStart=/bin/sleep 600\n`, { reload: false });
        const now = Date.now();
        db.insert(services).values({ id: `benchmon${started}`, version: 1, unit: name, alertRules: JSON.stringify([{ metric: 'memory', above: 1e12 }]), createdAt: now, updatedAt: now }).run();
      }
      await mgr.reload();
      await Promise.all(Array.from({ length: n }, (_, i) => mgr.startUnit(unitName(i))));
      const monitor = new Monitor({ db, systemd: mgr, logger: silentLogger, dataDir: dir, intervalMs: 60_000 });
      await monitor.sampleNow(); // warm-up (and the CPU baseline of each unit)
      const sample = [];
      const systemdCall = [];
      const baseline = [];
      // CPU of back-to-back samples, measured apart from the baseline's systemctl processes.
      const cpuRounds = Math.max(runs, 20);
      const c0 = process.cpuUsage();
      const h0 = helpers.map(ticksMs);
      for (let r = 0; r < cpuRounds; r++) await monitor.sampleNow();
      const c1 = process.cpuUsage(c0);
      const helperMs = helpers.map(ticksMs).reduce((a, v, k) => a + v - h0[k], 0);
      const selfMs = (c1.user + c1.system) / 1000 / cpuRounds;
      const cpuMs = selfMs + helperMs / cpuRounds;
      for (let r = 0; r < runs; r++) {
        let t0 = performance.now();
        await monitor.sampleNow();
        sample.push(performance.now() - t0);
        systemdCall.push(monitor.get().cost.systemdMs);
        t0 = performance.now();
        for (let i = 0; i < n; i++) {
          await run('systemctl', ['--user', 'show', unitName(i), '-p', 'ActiveState,SubState,MainPID,MemoryCurrent,TasksCurrent,CPUUsageNSec,NRestarts']);
        }
        baseline.push(performance.now() - t0);
      }
      const snap = monitor.get();
      await monitor.stop();
      const b = median(baseline);
      const spread = { min: Math.min(...sample), max: Math.max(...sample) };
      figures.push(figure(`sample with ${n} units`, median(sample), 'ms', { baseline: b, target: n === 200 ? 'ratio <= 0.02' : 'ratio < 1', units: n, min: Number(spread.min.toFixed(2)), max: Number(spread.max.toFixed(2)), knownMemory: snap.services.filter((s) => s.memory !== null).length, knownTasks: snap.services.filter((s) => s.tasks !== null).length, knownCpu: snap.services.filter((s) => s.cpu !== null).length }));
      if (n === 200) figures.push(figure(`sample with ${n} units, absolute`, median(sample), 'ms', { target: '<= 30' }));
      figures.push(figure(`CPU per sample with ${n} units (monitor ${selfMs.toFixed(2)} ms + systemd and dbus-daemon)`, cpuMs, 'ms', { units: n }));
      figures.push(figure(`CPU share of monitoring with ${n} units at the default ${DEFAULT_INTERVAL_MS / 1000} s interval`, (100 * cpuMs) / DEFAULT_INTERVAL_MS, '% of one CPU', { units: n }));
      figures.push(figure(`systemd call for ${n} units (inside the sample)`, median(systemdCall), 'ms', { units: n }));
      figures.push(figure(`systemctl show per unit, ${n} units (baseline)`, b, 'ms', { units: n }));
    }
  } finally {
    await Promise.all(Array.from({ length: started }, (_, i) => mgr.stopUnit(unitName(i)).catch(() => undefined)));
    await mgr.close();
    close();
    rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify({ name: 'monitoring', runs, figures }, null, 2) + '\n');
}
