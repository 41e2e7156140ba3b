#!/usr/bin/env node
// Fault injection against the real smd on a real systemd stack (issue 8, part 3). As root:
//
//   node scripts/stress/faults.mjs [--only a,b,c,d]
//
// Each fault gets its own `scripts/sandbox --hold` (private mount and network namespace,
// journald, session bus, `systemd --user`); smd runs inside through nsenter with that sandbox's
// bus and unit directory. Everything is torn down by PID afterwards.
//   a. the D-Bus daemon, then the systemd manager, killed and started again while hello-http and
//      writer run: time until system.health says systemd ok again, MainPIDs across the bus
//      restart, what a manager restart does to the units and how long until both are active.
//   b. the data dir on a 3 MiB tmpfs (mounted inside the namespaces) that fills during an
//      install: LIMIT, nothing half-installed, smd keeps serving (and installs once freed).
//   c. iptables failing (/bin/false bind-mounted over its binaries inside the sandbox's mount
//      namespace only) with traffic enabled: health says why, a service still installs and runs.
//   d. a database corrupted in the middle (and, second case, in its header): smd refuses to
//      start with a clear message and a non-zero exit, and the file is unchanged (sha256).
// Prints one JSON object; exits 1 when a target is missed.
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, openSync, writeSync, closeSync, statSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { figure, round } from '../bench/lib/stats.mjs';
import { ROOT, startSandbox, startSmdInside } from './lib/sandbox.mjs';
import { mulberry32 } from './lib/fuzz.mjs';

const { RpcClient } = await import(join(ROOT, 'dist/cli/client.js'));
const { values: argv } = parseArgs({ options: { only: { type: 'string', default: 'a,b,c,d' }, keep: { type: 'boolean', default: false } } });
const only = new Set(argv.only.split(','));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => process.stderr.write(`[stress/faults] ${a.join(' ')}\n`);
const now = () => performance.now();
const pass = (name, ok, extra = {}) => figure(name, ok ? 1 : 0, 'pass', { target: '>= 1', ...extra });

/** Polls `fn` until `pred(value)` holds; resolves with {value, ms} or {value, ms, timedOut}. */
async function waitFor(fn, pred, timeoutMs, intervalMs = 50) {
  const t0 = now();
  let value;
  for (;;) {
    try {
      value = await fn();
    } catch (err) {
      value = { error: err.message };
    }
    if (pred(value)) return { value, ms: now() - t0 };
    if (now() - t0 > timeoutMs) return { value, ms: now() - t0, timedOut: true };
    await sleep(intervalMs);
  }
}

const imagesDir = mkdtempSync(join(tmpdir(), 'smd-stress-images-'));
const built = JSON.parse(execFileSync(process.execPath, [join(ROOT, 'scripts/images/build.mjs'), imagesDir, '--version', '1'], { encoding: 'utf8' }));
const image = Object.fromEntries(built.images.map((i) => [i.name, i.path]));

function configFor(dir, sb, extra = {}) {
  return {
    dataDir: join(dir, 'data'),
    runDir: join(dir, 'run'),
    logLevel: 'info',
    systemd: { bus: sb.bus, unitDir: sb.unitDir, callTimeoutMs: 5000 },
    services: { settleMs: 300 },
    ...extra,
  };
}

async function inSandbox(name, fn) {
  const sb = await startSandbox();
  const cleanups = [];
  try {
    return await fn(sb, (f) => cleanups.push(f));
  } catch (err) {
    log(`${name}: ${err.stack ?? err}`);
    return { figures: [pass(`${name}: ran to the end`, false)], error: String(err.message ?? err) };
  } finally {
    for (const f of cleanups.reverse()) await Promise.resolve().then(f).catch(() => {});
    await sb.stop();
  }
}

const health = (c) => c.call('system.health');
const live = async (c, id) => (await c.call('services.get', { id })).live ?? {};
const alive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

// ---------------------------------------------------------------------------------------------
async function faultA() {
  return inSandbox('a', async (sb, cleanup) => {
    const dir = join(sb.dir, 'fault-a');
    mkdirSync(dir, { recursive: true });
    const smd = await startSmdInside(sb, dir, configFor(dir, sb));
    cleanup(() => smd.stop());
    const c = await RpcClient.connect(smd.socket);
    cleanup(() => c.close());
    for (const id of ['hello-http', 'writer']) {
      const op = await c.call('services.install', { image: image[id], wait: true });
      if (op.state !== 'succeeded') throw new Error(`install ${id}: ${JSON.stringify(op.error)}`);
    }
    const pids0 = { 'hello-http': (await live(c, 'hello-http')).mainPid, writer: (await live(c, 'writer')).mainPid };
    log(`a: both running, MainPIDs ${JSON.stringify(pids0)}`);

    // D-Bus daemon killed and started again.
    await sb.control('kill-dbus');
    const down = await waitFor(() => health(c), (h) => h.checks?.systemd?.ok === false, 15_000);
    const downDetail = down.value.checks?.systemd?.detail;
    await sleep(1000); // a second without a bus
    const restartSent = now();
    const back = await sb.control('start-dbus');
    const resync = await waitFor(() => health(c), (h) => h.checks?.systemd?.ok === true, 30_000, 20);
    const okAt = now();
    const resyncMs = okAt - back.at;
    const pids1 = { 'hello-http': (await live(c, 'hello-http')).mainPid, writer: (await live(c, 'writer')).mainPid };
    const states1 = { 'hello-http': (await live(c, 'hello-http')).activeState, writer: (await live(c, 'writer')).activeState };
    const pidsKept = pids1['hello-http'] === pids0['hello-http'] && pids1.writer === pids0.writer && Object.values(states1).every((s) => s === 'active');
    log(`a: bus back; health ok after ${round(resyncMs, 0)} ms; MainPIDs ${JSON.stringify(pids1)} ${JSON.stringify(states1)}`);

    // systemd --user killed and started again.
    await sb.control('kill-systemd');
    const mgrDown = await waitFor(() => health(c), (h) => h.checks?.systemd?.ok === false, 15_000);
    const mgrDownDetail = mgrDown.value.checks?.systemd?.detail;
    const whileDown = await c.call('services.start', { id: 'writer' }).then(() => 'answered', (e) => e.code ?? e.message);
    await sleep(1000);
    const orphansWhileDown = Object.fromEntries(Object.entries(pids1).map(([k, p]) => [k, alive(p)]));
    const mgrBack = await sb.control('start-systemd');
    const mgrHealth = await waitFor(() => health(c), (h) => h.checks?.systemd?.ok === true, 30_000, 20);
    const mgrHealthMs = now() - mgrBack.at;
    const active = await waitFor(
      async () => ({ h: await live(c, 'hello-http'), w: await live(c, 'writer') }),
      (v) => v.h?.activeState === 'active' && v.w?.activeState === 'active' && v.h.mainPid && v.w.mainPid,
      60_000,
      100,
    );
    const activeMs = now() - mgrBack.at;
    const pids2 = { 'hello-http': active.value.h?.mainPid ?? null, writer: active.value.w?.mainPid ?? null };
    await sleep(2000); // do they stay up?
    const after = { 'hello-http': await live(c, 'hello-http').catch(() => ({})), writer: await live(c, 'writer').catch(() => ({})) };
    const oldAlive = Object.fromEntries(Object.entries(pids1).map(([k, p]) => [k, alive(p)]));
    const svc = await c.call('services.get', { id: 'hello-http' });
    const page = await sb.exec(process.execPath, [join(ROOT, 'scripts/http-get.mjs'), `http://${svc.address}:8080/`], { timeoutMs: 10_000 });
    const stable = after['hello-http'].activeState === 'active' && after.writer.activeState === 'active' && after['hello-http'].mainPid === pids2['hello-http'] && after.writer.mainPid === pids2.writer;
    log(`a: manager back; health ok after ${round(mgrHealthMs, 0)} ms; both active after ${round(activeMs, 0)} ms; MainPIDs ${JSON.stringify(pids2)}; old processes alive ${JSON.stringify(oldAlive)}`);
    const info = await c.call('system.info').then(() => true, () => false);
    return {
      figures: [
        pass('a: D-Bus restart: health saw systemd down', !down.timedOut),
        figure('a: D-Bus back → system.health systemd ok', resyncMs, 'ms', { target: '< 5000' }),
        figure('a: D-Bus restart command → systemd ok (includes dbus-daemon and manager reattaching)', okAt - restartSent, 'ms'),
        pass('a: D-Bus restart: both services active with MainPID unchanged', pidsKept),
        pass('a: manager down: service actions answered UNAVAILABLE', whileDown === 'UNAVAILABLE'),
        figure('a: manager back → system.health systemd ok', mgrHealthMs, 'ms', { target: '< 5000' }),
        figure('a: manager back → both services active again', activeMs, 'ms', { target: '< 5000' }),
        pass('a: manager restart: both services active and stable 2 s later', stable),
        pass('a: manager restart: hello-http serves its page again', page.code === 0 && /hello from smd/.test(page.stdout)),
        pass('a: smd kept serving throughout', info && smd.proc.exitCode === null),
        figure('a: processes of the killed manager still running after the resync (duplicates)', Object.values(oldAlive).filter(Boolean).length, 'processes'),
      ],
      details: {
        mainPids: { initial: pids0, afterBusRestart: pids1, afterManagerRestart: pids2 },
        busDownHealth: downDetail,
        managerDownHealth: mgrDownDetail,
        servicesStartWhileManagerDown: whileDown,
        oldProcessesAliveWhileManagerDown: orphansWhileDown,
        oldProcessesAliveAfterManagerRestart: oldAlive,
        afterManagerRestart: { 'hello-http': pick(after['hello-http']), writer: pick(after.writer) },
        page: page.code === 0 ? page.stdout.trim().slice(0, 120) : page.stderr.trim().slice(0, 300),
      },
    };
  });
}
const pick = (l) => ({ activeState: l.activeState, subState: l.subState, mainPid: l.mainPid, restarts: l.restarts });

// ---------------------------------------------------------------------------------------------
async function faultB() {
  return inSandbox('b', async (sb, cleanup) => {
    const dir = join(sb.dir, 'fault-b');
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir, { recursive: true });
    await sb.run('mount', ['-t', 'tmpfs', '-o', 'size=3m,mode=0755', 'tmpfs', dataDir]);
    cleanup(() => sb.exec('umount', ['-l', dataDir]));
    const avail = async () => Number((await sb.run('df', ['-B1', '--output=avail', dataDir])).trim().split('\n').pop());
    const smd = await startSmdInside(sb, dir, configFor(dir, sb, { dataDir }));
    cleanup(() => smd.stop());
    const c = await RpcClient.connect(smd.socket);
    cleanup(() => c.close());
    // Leave 1 MiB: the database fits, the ~2 MB busybox layer does not.
    const free0 = await avail();
    const ballast = Math.max(0, free0 - (1 << 20));
    await sb.run('sh', ['-c', `head -c ${ballast} /dev/zero > ${join(dataDir, 'ballast')}`]);
    const free1 = await avail();
    log(`b: tmpfs 3 MiB, ${free0} bytes free after start, ${free1} after ballast`);
    const t0 = now();
    const op = await c.call('services.install', { image: image['hello-http'], wait: true });
    const failMs = now() - t0;
    const row = await c.call('services.get', { id: 'hello-http' }).then(() => 'present', (e) => e.code);
    const list = await c.call('services.list');
    const unit = await sb.exec('test', ['-e', join(sb.unitDir, 'smd-hello-http.service')]);
    // The store keeps layers in layers/sha256/<hex>; anything else below layers/ but that empty
    // container directory would be a half-unpacked or temporary layer.
    const layerDirs = (await sb.exec('find', [join(dataDir, 'layers'), '-mindepth', '1'])).stdout.trim().split('\n').filter((p) => p && p !== join(dataDir, 'layers/sha256'));
    const layers = await c.call('layers.list');
    const leftovers = (await sb.exec('find', [dataDir, '-mindepth', '1', '-maxdepth', '3'])).stdout.trim().split('\n').filter(Boolean).map((p) => p.slice(dataDir.length + 1));
    const info = await c.call('system.info').then((i) => i.name === 'smd', () => false);
    const h = await health(c);
    const free2 = await avail();
    log(`b: install ${op.state} ${JSON.stringify(op.error)}; row ${row}; unit file ${unit.code === 0}; layer dirs ${layerDirs.length}; free again ${free2}`);
    // Space back: the same install now succeeds.
    await sb.run('rm', ['-f', join(dataDir, 'ballast')]);
    const retry = await c.call('services.install', { image: image['hello-http'], wait: true });
    const retryLive = retry.state === 'succeeded' ? await live(c, 'hello-http') : {};
    return {
      figures: [
        pass('b: install on a full data dir fails with LIMIT', op.state === 'failed' && op.error?.code === 'LIMIT'),
        figure('b: time until the install failed', failMs, 'ms'),
        pass('b: nothing half-installed (no service row, no unit file, no layer dirs or rows)', row === 'NOT_FOUND' && list.length === 0 && unit.code !== 0 && layerDirs.length === 0 && layers.length === 0),
        pass('b: smd keeps serving (system.info answers, db healthy)', info && h.checks.db.ok && smd.proc.exitCode === null),
        pass('b: after freeing space the same install succeeds and runs', retry.state === 'succeeded' && retryLive.activeState === 'active'),
      ],
      details: {
        tmpfsBytes: 3 << 20,
        freeAfterStart: free0,
        freeBeforeInstall: free1,
        freeAfterFailure: free2,
        error: op.error,
        dataDirAfterFailure: leftovers,
        layerEntriesAfterFailure: layerDirs,
        retry: { state: retry.state, error: retry.error, activeState: retryLive.activeState },
      },
    };
  });
}

// ---------------------------------------------------------------------------------------------
async function faultC() {
  return inSandbox('c', async (sb, cleanup) => {
    const dir = join(sb.dir, 'fault-c');
    mkdirSync(dir, { recursive: true });
    // Bind /bin/false over the binaries iptables, iptables-save and iptables-restore resolve to,
    // inside the sandbox's private mount namespace only.
    const names = ['iptables', 'iptables-save', 'iptables-restore', 'ip6tables', 'ip6tables-save', 'ip6tables-restore'];
    const targets = new Set();
    for (const n of names) {
      const path = (await sb.exec('sh', ['-c', `command -v ${n}`])).stdout.trim();
      if (path) targets.add((await sb.run('readlink', ['-f', path])).trim());
    }
    for (const t of targets) {
      await sb.run('mount', ['--bind', '/bin/false', t]);
      cleanup(() => sb.exec('umount', [t]));
    }
    const hostMounts = readFileSync('/proc/self/mountinfo', 'utf8');
    const leakedToHost = [...targets].filter((t) => hostMounts.includes(` ${t} `));
    const probe = await sb.exec('iptables', ['-w', '-S']);
    log(`c: /bin/false over ${[...targets].join(', ')} inside the sandbox (iptables -S exits ${probe.code}); visible on the host: ${leakedToHost.length}`);
    if (leakedToHost.length) throw new Error(`bind mount visible on the host: ${leakedToHost}`);

    const smd = await startSmdInside(sb, dir, configFor(dir, sb, { traffic: { enabled: true } }));
    cleanup(() => smd.stop());
    const c = await RpcClient.connect(smd.socket);
    cleanup(() => c.close());
    const h = await health(c);
    const op = await c.call('services.install', { image: image['hello-http'], wait: true });
    const l = op.state === 'succeeded' ? await live(c, 'hello-http') : {};
    await sleep(1500);
    const l2 = op.state === 'succeeded' ? await live(c, 'hello-http') : {};
    const svc = op.state === 'succeeded' ? await c.call('services.get', { id: 'hello-http' }) : {};
    const page = svc.address ? await sb.exec(process.execPath, [join(ROOT, 'scripts/http-get.mjs'), `http://${svc.address}:8080/`], { timeoutMs: 10_000 }) : { code: -1, stderr: 'no address' };
    const traffic = await c.call('traffic.get').then((r) => r.length, (e) => e.code);
    const h2 = await health(c);
    log(`c: traffic health ${JSON.stringify(h.checks.traffic)}; install ${op.state} ${JSON.stringify(op.error)}; ${l2.activeState} pid ${l2.mainPid}`);
    return {
      figures: [
        pass('c: iptables failing: health shows traffic not ok with a reason', h.checks.traffic.ok === false && typeof h.checks.traffic.detail === 'string' && h.checks.traffic.detail.length > 0),
        pass('c: a service still installs and runs', op.state === 'succeeded' && l.activeState === 'active' && l2.activeState === 'active' && l2.mainPid === l.mainPid),
        pass('c: the service answers on its own address', page.code === 0 && /hello from smd/.test(page.stdout)),
        pass('c: other checks unaffected (db, systemd ok)', h2.checks.db.ok && h2.checks.systemd.ok),
      ],
      details: {
        falseOver: [...targets],
        iptablesExit: probe.code,
        trafficHealth: h.checks.traffic,
        install: { state: op.state, error: op.error },
        live: l2.activeState ? pick(l2) : null,
        address: svc.address ?? null,
        page: page.code === 0 ? page.stdout.trim().slice(0, 120) : page.stderr.trim().slice(0, 300),
        trafficGet: traffic,
      },
    };
  });
}

// ---------------------------------------------------------------------------------------------
const sha256 = (p) => createHash('sha256').update(readFileSync(p)).digest('hex');

async function faultD() {
  const dir = mkdtempSync(join(tmpdir(), 'smd-stress-corrupt-'));
  try {
    // Outside any sandbox: no systemd (a bus that does not exist), traffic off, nothing touched.
    const config = { dataDir: join(dir, 'data'), runDir: join(dir, 'run'), logLevel: 'warn', traffic: { enabled: false }, systemd: { bus: `unix:path=${join(dir, 'no-bus')}`, unitDir: join(dir, 'units') } };
    const dbPath = join(dir, 'data/smd.db');
    const smd = await startSmdInside(null, dir, config);
    const c = await RpcClient.connect(smd.socket);
    // Real content: operations with steps, a version change.
    for (let i = 0; i < 300; i++) await c.call('layers.prune', { wait: i % 10 === 0 });
    await c.call('system.setVersion', { version: 12 });
    c.close();
    const stop = await smd.stop();
    const cases = [];
    const rnd = mulberry32(0xd00d);
    for (const [label, where] of [
      ['middle', (size) => Math.floor(size / 2 / 4096) * 4096],
      ['header', () => 0],
    ]) {
      const copy = join(dir, `data-${label}`);
      mkdirSync(copy, { recursive: true });
      const path = join(copy, 'smd.db');
      execFileSync('cp', [dbPath, path]);
      const size = statSync(path).size;
      const offset = where(size);
      const garbage = Buffer.from(Array.from({ length: 512 }, () => Math.floor(rnd() * 256)));
      const fd = openSync(path, 'r+');
      writeSync(fd, garbage, 0, garbage.length, offset);
      closeSync(fd);
      const before = sha256(path);
      const bad = await startSmdInside(null, dir, { ...config, dataDir: copy, runDir: join(dir, `run-${label}`) }, { expectExit: true, readyTimeoutMs: 20_000 });
      const exit = bad.outcome.ready ? await bad.stop() : await bad.exited;
      const after = sha256(path);
      const message = bad.output().stderr.trim();
      cases.push({
        label,
        size,
        offset,
        refused: !bad.outcome.ready,
        exitCode: exit.code,
        ms: round(bad.startMs, 1),
        message,
        unchanged: before === after,
        sha256: after,
        sidecars: ['-wal', '-shm', '-journal'].filter((s) => existsSync(path + s)),
      });
    }
    const clear = (m) => /database/i.test(m) && /refusing to start|unusable|corrupt|malformed|not a database/i.test(m) && m.split('\n').length <= 3;
    const m = cases.find((x) => x.label === 'middle');
    const hd = cases.find((x) => x.label === 'header');
    log(`d: middle: exit ${m.exitCode} unchanged ${m.unchanged}: ${m.message}`);
    log(`d: header: exit ${hd.exitCode} unchanged ${hd.unchanged}: ${hd.message}`);
    return {
      figures: [
        pass('d: corrupted in the middle: refuses to start, non-zero exit, clear message', m.refused && m.exitCode !== 0 && m.exitCode !== null && clear(m.message)),
        pass('d: corrupted in the middle: file unchanged (sha256)', m.unchanged),
        figure('d: time to refuse (middle)', m.ms, 'ms'),
        pass('d: corrupted header: refuses to start, non-zero exit, clear message', hd.refused && hd.exitCode !== 0 && hd.exitCode !== null && clear(hd.message)),
        pass('d: corrupted header: file unchanged (sha256)', hd.unchanged),
      ],
      details: { healthyStopExit: stop.code, cases },
    };
  } finally {
    if (!argv.keep) rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
const started = now();
const results = {};
for (const [key, fn] of [['a', faultA], ['b', faultB], ['c', faultC], ['d', faultD]]) {
  if (!only.has(key)) continue;
  const t0 = now();
  log(`fault ${key}...`);
  results[key] = await fn();
  results[key].seconds = round((now() - t0) / 1000, 1);
}
rmSync(imagesDir, { recursive: true, force: true });
const figures = Object.values(results).flatMap((r) => r.figures);
const out = { name: 'stress-faults', seconds: round((now() - started) / 1000, 1), figures, details: Object.fromEntries(Object.entries(results).map(([k, r]) => [k, { seconds: r.seconds, ...(r.details ?? {}), ...(r.error ? { error: r.error } : {}) }])) };
process.stdout.write(JSON.stringify(out, null, 2) + '\n');
process.exit(figures.every((f) => f.met !== false) ? 0 : 1);
