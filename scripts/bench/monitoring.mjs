#!/usr/bin/env node
// Benchmark of one monitoring sample (src/monitoring/monitor.ts) against the real user manager of
// scripts/sandbox, with 1, 50 and 200 running units. Baseline, measured in the same run: reading
// the same properties with one `systemctl --user show` per unit.
//
//   npx tsc -p . && node scripts/bench/monitoring.mjs       (SMD_DIST=<dir> to use another build)
//
// Prints one JSON object: {name:"monitoring", figures:[{name, value, unit, baseline?, ratio?, target?}]}.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
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
      const b = median(baseline);
      figures.push(figure(`sample with ${n} units`, median(sample), 'ms', { baseline: b, target: 'ratio < 1', units: n, knownMemory: snap.services.filter((s) => s.memory !== null).length, knownCpu: snap.services.filter((s) => s.cpu !== null).length }));
      figures.push(figure(`systemd getUnits for ${n} units (inside the sample)`, median(systemdCall), 'ms', { units: n }));
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
