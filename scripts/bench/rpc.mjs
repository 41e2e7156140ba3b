// RPC benchmark: system.info through smd against a minimal NDJSON echo server (the floor),
// at 1, 16 and 64 connections; time to READY=1 and idle RSS. Prints one JSON object.
import { spawn, execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { figure, median, percentile, round } from './lib/stats.mjs';
import { ROOT, scratchDir, startSmd } from './lib/smd.mjs';

const DURATION_MS = Number(process.env.BENCH_RPC_MS ?? 3000);
const REQUEST = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'system.info' });

function load(socket, connections) {
  const out = execFileSync(process.execPath, [join(ROOT, 'scripts/bench/lib/load.mjs'), socket, String(connections), String(DURATION_MS), REQUEST], { maxBuffer: 1 << 30 });
  const r = JSON.parse(out);
  const sorted = r.latenciesMs.sort((a, b) => a - b);
  return { rps: r.requests / r.seconds, p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
}

const dir = scratchDir();
const figures = [];
try {
  // Start-up: empty database each time, interleaved with the floor (node + notify addon, nothing
  // else) spawned the same way, so the noise of this machine hits both alike.
  const FLOOR = join(ROOT, 'scripts/bench/lib/ready-floor.mjs');
  const readyTimes = [];
  const floorTimes = [];
  for (let i = 0; i < 9; i++) {
    for (const [times, nodeArgs, main] of [[readyTimes, null, undefined], [floorTimes, ['--max-semi-space-size=1'], FLOOR]]) {
      const d = scratchDir();
      const s = await startSmd(d, {}, {}, nodeArgs, main);
      times.push(s.readyMs);
      await s.stop();
      rmSync(d, { recursive: true, force: true });
    }
  }
  figures.push(figure('start to READY=1, empty database (median of 9)', median(readyTimes), 'ms', { target: 'ratio <= 1.8', baseline: round(median(floorTimes)), min: round(Math.min(...readyTimes)), max: round(Math.max(...readyTimes)) }));

  const smd = await startSmd(dir);
  await new Promise((r) => setTimeout(r, 2000)); // let start-up garbage settle before reading RSS
  figures.push(figure('idle RSS', smd.rssKb() / 1024, 'MB', { target: '< 70' }));

  const echoSock = join(dir, 'echo.sock');
  const echo = spawn(process.execPath, [join(ROOT, 'scripts/bench/lib/echo-server.mjs'), echoSock], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise((r) => echo.stdout.once('data', r));

  for (const n of [1, 16, 64]) {
    // Alternate so that machine noise hits both sides alike.
    const e = load(echoSock, n);
    const s = load(smd.socket, n);
    figures.push(figure(`system.info throughput, ${n} conn`, s.rps, 'req/s', { baseline: round(e.rps, 0), target: n === 1 ? 'ratio >= 0.8' : 'ratio >= 0.85' }));
    figures.push(figure(`system.info p50, ${n} conn`, s.p50, 'ms', { baseline: round(e.p50) }));
    figures.push(figure(`system.info p99, ${n} conn`, s.p99, 'ms', { baseline: round(e.p99), ...(n === 16 ? { target: 'ratio <= 1.3' } : {}) }));
  }
  echo.kill();
  await smd.stop();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify({ name: 'rpc', figures }, null, 2) + '\n');
