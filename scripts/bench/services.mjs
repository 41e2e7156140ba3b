// Services benchmark, inside the sandbox (real systemd --user, D-Bus, overlayfs): with N
// installed, running services, time from start to READY=1 (reconciliation included) against an
// empty database in the same run; services.list latency; idle RSS.
//   npm run build && node scripts/bench/services.mjs      (BENCH_SERVICES=200)
import { rmSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { figure, median } from './lib/stats.mjs';
import { ROOT, scratchDir, startSmd } from './lib/smd.mjs';
import { insideSandbox } from './lib/sandbox.mjs';

await insideSandbox(import.meta.url, main);

async function sleeperImage(dir) {
  const { imageLayout, writeArchive, gzip, MT } = await import(join(ROOT, 'scripts/images/oci.mjs'));
  const { baseLayerTar } = await import(join(ROOT, 'scripts/images/build.mjs'));
  const img = imageLayout({
    layers: [{ data: gzip(baseLayerTar()), mediaType: MT.layerTarGzip }],
    config: { Entrypoint: ['/bin/sleep', '100000'], Cmd: [], Env: ['PATH=/bin'], WorkingDir: '/' },
    annotations: { 'io.smd.version': '1' },
    platform: { os: 'linux', architecture: 'amd64' },
  });
  const path = join(dir, 'sleeper.tar');
  writeArchive(path, img.files);
  return path;
}

async function main() {
  const { RpcClient } = await import(join(ROOT, 'dist/cli/client.js'));
  const n = Number(process.env.BENCH_SERVICES ?? 200);
  const config = { systemd: { bus: process.env.DBUS_SESSION_BUS_ADDRESS, unitDir: process.env.SMD_SANDBOX_UNIT_DIR }, services: { settleMs: 0 }, traffic: { enabled: false } };
  const figures = [];

  const emptyTimes = [];
  for (let i = 0; i < 5; i++) {
    const d = scratchDir();
    const s = await startSmd(d, config);
    emptyTimes.push(s.readyMs);
    await s.stop();
    rmSync(d, { recursive: true, force: true });
  }

  const dir = scratchDir();
  mkdirSync(join(dir, 'images'));
  const image = await sleeperImage(join(dir, 'images'));
  let smd = await startSmd(dir, config);
  let c = await RpcClient.connect(smd.socket);
  const ids = Array.from({ length: n }, (_, i) => `svc-${String(i).padStart(3, '0')}`);
  const installStart = performance.now();
  for (let i = 0; i < ids.length; i += 8) {
    const ops = await Promise.all(ids.slice(i, i + 8).map((id) => c.call('services.install', { image, id, version: 1, wait: true })));
    const bad = ops.find((o) => o.state !== 'succeeded');
    if (bad) throw new Error(`install failed: ${JSON.stringify(bad.error)}`);
  }
  const installMs = performance.now() - installStart;
  c.close();
  await smd.stop();

  const fullTimes = [];
  for (let i = 0; i < 3; i++) {
    smd = await startSmd(dir, config, {}, process.env.BENCH_PROFILE_DIR ? ['--max-semi-space-size=1', '--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`] : null);
    fullTimes.push(smd.readyMs);
    if (i < 2) await smd.stop();
  }
  c = await RpcClient.connect(smd.socket);
  const list = await c.call('services.list');
  const running = list.filter((s) => s.state === 1).length;
  const lat = [];
  for (let i = 0; i < 100; i++) {
    const t0 = performance.now();
    await c.call('services.list');
    lat.push(performance.now() - t0);
  }
  await new Promise((r) => setTimeout(r, 2000));
  const rss = smd.rssKb() / 1024;
  c.close();
  await smd.stop();
  // The services keep running and their roots stay mounted: the sandbox's teardown removes them.

  figures.push(figure(`start to READY=1 with ${n} running services (median of 3)`, median(fullTimes), 'ms', { baseline: median(emptyTimes), target: 'ratio <= 1.3' }));
  figures.push(figure(`services running after restart`, running, 'services', { target: `>= ${n}` }));
  figures.push(figure(`services.list with ${n} services (median of 100)`, median(lat), 'ms'));
  figures.push(figure(`idle RSS with ${n} services`, rss, 'MB', { target: '< 80' }));
  figures.push(figure(`install of ${n} services, 8 at a time`, installMs / n, 'ms/service'));
  process.stdout.write(JSON.stringify({ name: 'services', figures }, null, 2) + '\n');
}
