#!/usr/bin/env node
// Benchmark of the systemd adapter against the real user manager of scripts/sandbox.
//
//   npx tsc -p . && node scripts/bench/systemd.mjs
//
// Runs itself inside the sandbox (re-exec through scripts/sandbox when SMD_SANDBOX_DIR is unset).
// Prints one JSON object: {name:"systemd", figures:[{name, value, unit, baseline?, ratio?, target?}]}.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { insideSandbox } from './lib/sandbox.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '../..');

await insideSandbox(import.meta.url, main);

async function main() {
  const { SystemdManager } = await import(join(root, 'dist/systemd/manager.js'));
  const { renderUnit } = await import(join(root, 'dist/systemd/unit.js'));
  const { silentLogger } = await import(join(root, 'dist/log.js'));
  const run = promisify(execFile);
  const runs = Number(process.env.BENCH_RUNS ?? 20);
  const viewUnits = Number(process.env.BENCH_UNITS ?? 200);

  const mgr = new SystemdManager({ bus: process.env.DBUS_SESSION_BUS_ADDRESS, unitDir: process.env.SMD_SANDBOX_UNIT_DIR, logger: silentLogger });
  await mgr.connect();
  if (!mgr.health().ok) throw new Error(`systemd not reachable: ${mgr.health().detail}`);

  const unitText = (name) => renderUnit({ description: `bench ${name}`, command: ['/bin/sh', '-c', 'exec sleep 600'] });
  const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  };
  const round = (x) => Math.round(x * 100) / 100;
  const figures = [];

  // --- 1. StartUnit -> active: adapter vs `systemctl --user start`, same unit, interleaved.
  const name = 'smd-bench-start.service';
  await mgr.writeUnit(name, unitText(name));
  const waitActive = () =>
    new Promise((resolve) => {
      const fn = (c) => {
        if (c.unit === name && c.state.activeState === 'active') {
          mgr.off('unit', fn);
          resolve();
        }
      };
      mgr.on('unit', fn);
    });
  const adapter = [];
  const systemctl = [];
  for (let i = 0; i < runs + 2; i++) {
    let t0 = performance.now();
    const active = waitActive();
    await mgr.startUnit(name);
    await active;
    const a = performance.now() - t0;
    await mgr.stopUnit(name);

    t0 = performance.now();
    await run('systemctl', ['--user', 'start', name]);
    const b = performance.now() - t0;
    await mgr.stopUnit(name);
    if (i >= 2) {
      // the first two are warm-up
      adapter.push(a);
      systemctl.push(b);
    }
  }
  const ma = median(adapter);
  const mb = median(systemctl);
  figures.push({ name: 'start_to_active_median', value: round(ma), unit: 'ms', baseline: round(mb), ratio: round(ma / mb), target: 'ratio <= 1.3', met: ma / mb <= 1.3 });

  // --- 2. Reload (one, shared by concurrent writers).
  const names = Array.from({ length: viewUnits }, (_, i) => `smd-bench-view-${i}.service`);
  let t0 = performance.now();
  await Promise.all(names.map((n) => mgr.writeUnit(n, unitText(n))));
  figures.push({ name: `write_${viewUnits}_units_one_reload`, value: round(performance.now() - t0), unit: 'ms' });
  await Promise.all(names.map((n) => mgr.startUnit(n)));

  // --- 3. Live view of all units: adapter vs one `systemctl --user show` for the same properties.
  const viewTimes = [];
  const showTimes = [];
  const props = 'LoadState,ActiveState,SubState,ActiveEnterTimestamp,ActiveExitTimestamp,InactiveEnterTimestamp,InactiveExitTimestamp,MainPID,NRestarts,MemoryCurrent,TasksCurrent,Result,ExecMainStatus,ExecMainCode';
  let sample;
  for (let i = 0; i < 7; i++) {
    t0 = performance.now();
    sample = await mgr.getUnits(names);
    viewTimes.push(performance.now() - t0);
    t0 = performance.now();
    await run('systemctl', ['--user', 'show', '-p', props, ...names], { maxBuffer: 64 << 20 });
    showTimes.push(performance.now() - t0);
  }
  if (sample.filter((v) => v.activeState === 'active').length !== viewUnits) throw new Error('not all view units are active');
  const mv = median(viewTimes.slice(1));
  const ms = median(showTimes.slice(1));
  figures.push({ name: `live_view_${viewUnits}_units_median`, value: round(mv), unit: 'ms', baseline: round(ms), ratio: round(mv / ms) });
  figures.push({ name: 'live_view_per_unit', value: round((mv / viewUnits) * 1000), unit: 'us' });

  t0 = performance.now();
  await mgr.listUnits();
  figures.push({ name: `list_units_by_patterns_${viewUnits + 1}`, value: round(performance.now() - t0), unit: 'ms' });

  await Promise.all(names.map((n) => mgr.stopUnit(n)));
  await mgr.close();
  process.stdout.write(JSON.stringify({ name: 'systemd', runs, figures }) + '\n');
}
