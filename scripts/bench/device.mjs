// Device benchmark (issue #18, goal 4): what a device sees, beside the sandbox, in one run.
// The device is scripts/device (a Debian 12 root booted with systemd as PID 1, smd installed
// with its shipped unit); the sandbox is scripts/sandbox (systemd --user), where every other
// benchmark runs. The same figures on both, medians of RUNS:
//  - start to READY=1 of smd on an empty database (device: the unit's ExecMainStart to
//    ActiveEnter, monotonic, as systemd saw it; sandbox: spawn to READY=1 on NOTIFY_SOCKET);
//  - services.install of a small image (one 2 MB layer, /bin/sleep), waited to the end;
//  - services.start of a stopped service, waited until it runs.
// Each device figure's baseline is the sandbox's figure of the same run (ratio = device/sandbox).
// The sandbox part runs first (in its own scripts/sandbox, re-executing this file with
// --sandbox-part), then the device boots: the two cannot interleave, since the device has its
// own smd. Services settle for 0 ms on both, so the figures are smd's and systemd's own work.
//   npm run build && node scripts/bench/device.mjs        (BENCH_DEVICE_RUNS=5)
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startHold } from '../lib/hold.mjs';
import { figure, median, round } from './lib/stats.mjs';
import { ROOT, scratchDir, startSmd } from './lib/smd.mjs';

const RUNS = Number(process.env.BENCH_DEVICE_RUNS ?? 5);
const log = (m) => process.stderr.write(`device: ${m}\n`);

async function sleeperImage(dir) {
  const { imageLayout, writeArchive, gzip, MT } = await import(join(ROOT, 'scripts/images/oci.mjs'));
  const { baseLayerTar } = await import(join(ROOT, 'scripts/images/build.mjs'));
  const img = imageLayout({
    layers: [{ data: gzip(baseLayerTar()), mediaType: MT.layerTarGzip }],
    config: { Entrypoint: ['/bin/sleep', '100000'], Cmd: [], Env: ['PATH=/bin'], WorkingDir: '/' },
    annotations: { 'io.smd.version': '1' },
    platform: { os: 'linux', architecture: 'amd64' },
  });
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'sleeper.tar');
  writeArchive(path, img.files);
  return path;
}

const timed = async (fn) => {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
};

/** Installs RUNS services and starts each once after a stop; returns the times (ms). */
async function installAndStart(client, image) {
  const install = [];
  const start = [];
  for (let i = 0; i < RUNS; i++) {
    const id = `bench-${i}`;
    let op;
    install.push(await timed(async () => (op = await client.call('services.install', { image, id, version: 1, wait: true }))));
    if (op.state !== 'succeeded') throw new Error(`install ${id}: ${JSON.stringify(op.error)}`);
    await client.call('services.stop', { id });
    start.push(await timed(() => client.call('services.start', { id })));
    const s = await client.call('services.get', { id });
    if (s.state !== 1) throw new Error(`${id} is not running after services.start: ${JSON.stringify(s)}`);
  }
  return { install, start };
}

async function sandboxPart() {
  const { RpcClient } = await import(join(ROOT, 'dist/cli/client.js'));
  const config = { systemd: { bus: process.env.DBUS_SESSION_BUS_ADDRESS, unitDir: process.env.SMD_SANDBOX_UNIT_DIR }, services: { settleMs: 0 } };
  const ready = [];
  for (let i = 0; i < RUNS; i++) {
    const d = scratchDir();
    const s = await startSmd(d, config);
    ready.push(s.readyMs);
    await s.stop();
    rmSync(d, { recursive: true, force: true });
  }
  const dir = scratchDir();
  const image = await sleeperImage(join(dir, 'images'));
  const smd = await startSmd(dir, config);
  const client = await RpcClient.connect(smd.socket);
  const { install, start } = await installAndStart(client, image);
  client.close();
  await smd.stop();
  process.stdout.write(JSON.stringify({ ready, install, start }) + '\n');
}

async function devicePart(sandbox) {
  const { RpcClient } = await import(join(ROOT, 'dist/cli/client.js'));
  const hold = await startHold(join(ROOT, 'scripts/device'), { startTimeoutMs: 240_000, stopTimeoutMs: 30_000, what: 'device' });
  try {
    const { pid1, root, path, bootMs } = hold.info;
    const exec = (cmd, args) => execFileSync('nsenter', ['-t', String(pid1), '-a', '--', 'env', '-i', `PATH=${path}`, cmd, ...args], { encoding: 'utf8', timeout: 60_000 });
    writeFileSync(join(root, 'etc/smd/smd.json'), JSON.stringify({ services: { settleMs: 0 } }));
    const ready = [];
    for (let i = 0; i < RUNS; i++) {
      exec('systemctl', ['stop', 'smd']);
      rmSync(join(root, 'var/lib/smd'), { recursive: true, force: true }); // an empty database
      exec('systemctl', ['reset-failed', 'smd']); // five starts in a row would meet the unit's start limit
      exec('systemctl', ['start', 'smd']); // returns once the unit is active: READY=1 (Type=notify)
      const p = Object.fromEntries(exec('systemctl', ['show', 'smd', '-p', 'ExecMainStartTimestampMonotonic,ActiveEnterTimestampMonotonic,ActiveState']).trim().split('\n').map((l) => l.split('=')));
      if (p.ActiveState !== 'active') throw new Error(`smd is ${p.ActiveState} on the device`);
      ready.push((Number(p.ActiveEnterTimestampMonotonic) - Number(p.ExecMainStartTimestampMonotonic)) / 1000);
    }
    const image = await sleeperImage(join(root, 'srv'));
    const client = await RpcClient.connect(`/proc/${pid1}/root/run/smd/smd.sock`);
    const { install, start } = await installAndStart(client, image.slice(root.length));
    client.close();
    const device = { ready, install, start };
    const figs = [figure('device boot (systemd-nspawn -b until the hold script sees it up)', bootMs, 'ms')];
    for (const [key, name] of [['ready', 'start to READY=1, empty database'], ['install', 'services.install of a 1-layer image'], ['start', 'services.start to running']]) {
      const times = device[key];
      figs.push(figure(`${name}, device / sandbox (median of ${RUNS})`, median(times), 'ms', { baseline: round(median(sandbox[key])), min: round(Math.min(...times)), max: round(Math.max(...times)) }));
    }
    return figs;
  } finally {
    await hold.stop();
  }
}

if (process.argv.includes('--sandbox-part')) {
  const { insideSandbox } = await import('./lib/sandbox.mjs');
  await insideSandbox(import.meta.url, sandboxPart);
} else {
  log(`sandbox part (${RUNS} runs)`);
  const out = execFileSync(process.execPath, [import.meta.filename, '--sandbox-part'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 10 * 60_000 });
  const sandbox = JSON.parse(out.trim().split('\n').pop());
  log(`sandbox: ready ${sandbox.ready.map(Math.round)} install ${sandbox.install.map(Math.round)} start ${sandbox.start.map(Math.round)} ms; booting the device`);
  const figures = await devicePart(sandbox);
  process.stdout.write(JSON.stringify({ name: 'device', figures }, null, 2) + '\n');
}
