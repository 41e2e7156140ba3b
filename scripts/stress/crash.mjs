#!/usr/bin/env node
// Crash stress: kill -9 smd at random points of random work, restart it, check it recovered.
//
//   npm run build && node scripts/stress/crash.mjs [--kills 100] [--seed S] [--max-delay-ms 1500]
//                                                   [--settle-ms 500] [--persist-ms 60000] [--log FILE]
//
// Runs inside scripts/sandbox (re-execs itself through it when SMD_SANDBOX_DIR is unset): a real
// systemd --user, D-Bus, journald, overlayfs and iptables in private namespaces.
// Each round: in some rounds first install an absent app, or run a failing update to its end
// (both acknowledged); make a little HTTP traffic to hello-http (so the traffic totals move) and
// read traffic.get; then send random actions (install, update, an update to a failing image that must
// roll back, remove, users.set, layers.prune) one after the other and SIGKILL smd a random
// 0..max-delay-ms after the first was sent. Then restart smd (READY=1 on our notify socket) and
// check: the shared invariants (scripts/stress/lib/invariants.mjs), the stricter ones (accounts,
// storage, namespaces, chains without a row; services that should run are mounted and active),
// every acknowledged reply's effect (state = what acknowledged replies imply; the one action in
// flight at the kill may have happened or not, nothing else), and traffic totals never lower
// than seen before the kill (same period).
// The PRNG is seeded (printed): the same seed replays the same choices (timings still vary).
// Prints {name:"crash", seed, kills, violations, details:[first 20], figures:[...]}; exits 1 on
// any violation.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { createWriteStream, mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(here, '../..');

function parseArgs(argv) {
  const o = { kills: 100, seed: null, maxDelayMs: 1500, settleMs: 500, persistMs: 60_000, log: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => {
      const x = argv[++i];
      if (x === undefined) usage(`${a} needs a value`);
      return x;
    };
    if (a === '--kills') o.kills = int(v(), a);
    else if (a === '--seed') o.seed = int(v(), a) >>> 0;
    else if (a === '--max-delay-ms') o.maxDelayMs = int(v(), a);
    else if (a === '--settle-ms') o.settleMs = int(v(), a);
    else if (a === '--persist-ms') o.persistMs = int(v(), a);
    else if (a === '--log') o.log = resolve(v());
    else usage(`unknown argument ${a}`);
  }
  return o;
}
function int(s, name) {
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < 0) usage(`${name}: not a non-negative integer: ${s}`);
  return n;
}
function usage(msg) {
  process.stderr.write(`crash: ${msg}\nusage: node scripts/stress/crash.mjs [--kills N] [--seed S] [--max-delay-ms MS] [--settle-ms MS] [--persist-ms MS] [--log FILE]\n`);
  process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));
if (opts.seed === null) opts.seed = (Math.random() * 2 ** 32) >>> 0;

if (!process.env.SMD_SANDBOX_DIR) {
  // Pass the seed explicitly so the printed one is the one used inside.
  const args = [process.execPath, fileURLToPath(import.meta.url), ...process.argv.slice(2).filter((_, i, a) => a[i] !== '--seed' && a[i - 1] !== '--seed'), '--seed', String(opts.seed)];
  const child = spawn(join(ROOT, 'scripts/sandbox'), args, { stdio: ['ignore', 'inherit', 'inherit'] });
  const forward = (sig) => child.kill(sig);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
} else {
  main().catch((err) => {
    process.stderr.write(`crash: ${err?.stack ?? err}\n`);
    process.exit(2);
  });
}

/** mulberry32: small, seedable, good enough to pick actions and delays. */
function prng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)), pick: (arr) => arr[Math.floor(next() * arr.length)] };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => process.stderr.write(`crash: ${a.join(' ')}\n`);

async function main() {
  const { RpcClient } = await import(join(ROOT, 'dist/cli/client.js'));
  const { serviceChain } = await import(join(ROOT, 'dist/traffic/naming.js'));
  const { checkInvariants, checkExtraInvariants, localSandbox } = await import(join(ROOT, 'scripts/stress/lib/invariants.mjs'));
  const { figure, median, percentile } = await import(join(ROOT, 'scripts/bench/lib/stats.mjs'));
  const unixDgram = createRequire(import.meta.url)('unix-dgram');

  const rnd = prng(opts.seed);
  log(`seed ${opts.seed}, ${opts.kills} kills (replay: node scripts/stress/crash.mjs --kills ${opts.kills} --seed ${opts.seed})`);
  const dir = mkdtempSync(join(process.env.SMD_SANDBOX_DIR ?? tmpdir(), 'smd-crash-'));
  const images = JSON.parse(await execNode([join(ROOT, 'scripts/images/build.mjs'), join(dir, 'images')])).images;
  const img = (name, v) => images.find((i) => i.name === name && i.version === v).path;
  const configPath = join(dir, 'smd.json');
  writeFileSync(
    configPath,
    JSON.stringify({
      dataDir: join(dir, 'data'),
      runDir: join(dir, 'run'),
      logLevel: 'info',
      systemd: { bus: process.env.DBUS_SESSION_BUS_ADDRESS, unitDir: process.env.SMD_SANDBOX_UNIT_DIR, callTimeoutMs: 5000 },
      services: { settleMs: opts.settleMs },
      // The sandbox's own network: traffic between it and the bridge counts on the system chains.
      traffic: { sampleIntervalMs: 500, persistIntervalMs: opts.persistMs, localSubnets: [] },
    }),
  );
  const logPath = opts.log ?? join(dir, 'smd.log');
  const smdLog = createWriteStream(logPath, { flags: 'a' });
  const sandbox = localSandbox();
  const paths = { dbPath: join(dir, 'data/smd.db'), dataDir: join(dir, 'data'), runDir: join(dir, 'run'), sandbox };

  // ---- smd process ---------------------------------------------------------------------------
  let smd = null;
  async function startSmd(round) {
    const notifyPath = join(dir, `notify-${round}.sock`);
    const sock = unixDgram.createSocket('unix_dgram');
    let onReady;
    const ready = new Promise((r) => (onReady = r));
    sock.on('message', (m) => m.toString().includes('READY=1') && onReady());
    sock.on('error', () => {});
    sock.bind(notifyPath);
    const t0 = performance.now();
    smdLog.write(`\n===== round ${round}: start =====\n`);
    const proc = spawn(join(ROOT, 'dist/bin/smd.js'), ['--config', configPath], { env: { ...process.env, NOTIFY_SOCKET: notifyPath }, stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout.pipe(smdLog, { end: false });
    proc.stderr.pipe(smdLog, { end: false });
    const exited = new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal })));
    let timer;
    try {
      await Promise.race([
        ready,
        exited.then((e) => {
          throw new Error(`smd exited (${e.code ?? e.signal}) before READY=1; see ${logPath}`);
        }),
        new Promise((_, rej) => (timer = setTimeout(() => rej(new Error(`no READY=1 within 90 s; see ${logPath}`)), 90_000))),
      ]);
    } catch (err) {
      proc.kill('SIGKILL');
      await exited;
      throw err;
    } finally {
      clearTimeout(timer);
      sock.close();
    }
    const client = await RpcClient.connect(join(dir, 'run/smd.sock'));
    smd = { proc, exited, client, readyMs: performance.now() - t0 };
    return smd;
  }
  async function killSmd() {
    smd.proc.kill('SIGKILL');
    const e = await smd.exited;
    smd.client.close();
    smd = null;
    return e;
  }

  // ---- the model: what acknowledged replies imply ------------------------------------------------
  // model.services: id -> version (absent = not installed); model.users: canonical JSON.
  const model = { services: new Map(), users: '[]' };
  const canonical = (u) => JSON.stringify([...new Set(u)].sort());
  const USER_SETS = [[], ['driver-1'], ['driver-1', 'driver-2']];
  const APPS = ['hello-http', 'writer'];

  function choices() {
    const c = [];
    for (const id of APPS) {
      const v = model.services.get(id);
      if (v === undefined) c.push({ kind: 'install', id, weight: 3 });
      else {
        c.push({ kind: 'update', id, weight: 2 });
        if (id === 'hello-http') c.push({ kind: 'update-failing', id, weight: 2 });
        c.push({ kind: 'remove', id, weight: 1 });
      }
    }
    c.push({ kind: 'users.set', weight: 1 }, { kind: 'layers.prune', weight: 1 });
    const total = c.reduce((s, x) => s + x.weight, 0);
    let r = rnd.next() * total;
    for (const x of c) if ((r -= x.weight) < 0) return x;
    return c[c.length - 1];
  }

  /** Builds the request for a choice and the model state its success (or expected failure) means. */
  function plan(choice) {
    const pre = { services: new Map(model.services), users: model.users };
    const post = { services: new Map(model.services), users: model.users };
    const v = model.services.get(choice.id);
    switch (choice.kind) {
      case 'install': {
        const image = rnd.pick([1, 2]);
        post.services.set(choice.id, image);
        return { ...choice, label: `install ${choice.id} v${image}`, method: 'services.install', params: { image: img(choice.id, image), wait: true }, pre, post, expectOk: true };
      }
      case 'update': {
        const next = v + 1;
        const image = rnd.pick([1, 2]);
        post.services.set(choice.id, next);
        return { ...choice, label: `update ${choice.id} v${v}->v${next}`, method: 'services.install', params: { image: img(choice.id, image), id: choice.id, version: next, wait: true }, pre, post, expectOk: true };
      }
      case 'update-failing': {
        // The failing image as the next version: it exits at once, so the update must roll back
        // and its operation fail; the outcome is the previous version either way.
        const next = v + 1;
        return { ...choice, label: `failing update ${choice.id} v${v}->v${next}`, method: 'services.install', params: { image: img('failing', 1), id: choice.id, version: next, wait: true }, pre, post: pre, expectOk: false };
      }
      case 'remove':
        post.services.delete(choice.id);
        return { ...choice, label: `remove ${choice.id}`, method: 'services.remove', params: { id: choice.id, wait: true }, pre, post, expectOk: true };
      case 'users.set': {
        const users = rnd.pick(USER_SETS.filter((u) => canonical(u) !== model.users));
        post.users = canonical(users);
        return { ...choice, label: `users.set ${post.users}`, method: 'users.set', params: { users, wait: true }, pre, post, expectOk: true };
      }
      case 'layers.prune':
        return { ...choice, label: 'layers.prune', method: 'layers.prune', params: { wait: true }, pre, post, expectOk: true };
    }
    throw new Error(`unknown choice ${choice.kind}`);
  }

  // ---- observations ----------------------------------------------------------------------------
  async function actualState(c) {
    const list = await c.call('services.list');
    const users = await c.call('users.get');
    const live = {};
    for (const s of list) live[s.id] = (await c.call('services.get', { id: s.id })).live?.activeState ?? 'unknown';
    return { services: new Map(list.map((s) => [s.id, s.version])), users: canonical(users.users), attached: new Set(users.services), live };
  }

  function trafficSnapshot(rows) {
    return new Map(rows.map((r) => [r.chain, { bytes: r.bytes, periodStart: r.periodStart }]));
  }

  async function makeTraffic(c) {
    if (!model.services.has('hello-http')) return 0;
    let address = null;
    try {
      address = (await c.call('services.get', { id: 'hello-http' })).address;
    } catch {
      return 0;
    }
    if (!address) return 0;
    let got = 0;
    for (let i = 0; i < 4; i++) got += await httpGet(`http://${address}:8080/`).catch(() => 0);
    return got;
  }

  // ---- the loop ----------------------------------------------------------------------------------
  const violations = [];
  const kinds = {};
  const violate = (round, kind, message) => {
    kinds[kind] = (kinds[kind] ?? 0) + 1;
    violations.push({ round, kind, message });
    log(`VIOLATION round ${round} [${kind}]: ${message}`);
  };
  const roundMs = [];
  const readyMs = [];
  const counts = { acknowledged: 0, acknowledgedFailures: 0, inFlight: 0, inFlightApplied: 0, inFlightNotApplied: 0, unexpectedReplies: 0, trafficBytesFetched: 0 };
  const inFlightByKind = {};
  let trafficSeen = new Map();
  let lastPeriodStart = null;

  await startSmd(0);
  readyMs.push(smd.readyMs);
  const t0 = performance.now();
  for (let round = 1; round <= opts.kills; round++) {
    const r0 = performance.now();
    const c = smd.client;
    counts.trafficBytesFetched += await makeTraffic(c);
    await sleep(600); // one sample (500 ms) later
    trafficSeen = trafficSnapshot(await c.call('traffic.get'));

    // Half the rounds first install (acknowledged, not timed) an app that is absent, so the timed
    // actions more often hit updates, failing updates, removes and users switches of real services.
    // Some rounds run a failing update to its end first: its reply must say the previous version
    // was restored (an acknowledged rollback, then checked like any acknowledged effect).
    const absent = APPS.filter((id) => !model.services.has(id));
    const prep = rnd.next();
    if (absent.length && prep < 0.5) {
      const p = plan({ kind: 'install', id: rnd.pick(absent) });
      const op = await c.call(p.method, p.params).catch((e) => ({ state: 'error', error: { message: e.message } }));
      if (op.state === 'succeeded') {
        counts.acknowledged++;
        model.services = p.post.services;
      } else violate(round, 'unexpected-failure', `prepare: ${p.label}: ${JSON.stringify(op.error)}`);
    } else if (model.services.has('hello-http') && prep > 0.85) {
      const p = plan({ kind: 'update-failing', id: 'hello-http' });
      const op = await c.call(p.method, p.params).catch((e) => ({ state: 'error', error: { message: e.message } }));
      if (op.state === 'failed' && /restored/.test(op.error?.message ?? '')) {
        counts.acknowledged++;
        counts.acknowledgedFailures++;
      } else violate(round, 'rollback', `prepare: ${p.label}: expected a failed operation that restored the previous version, got ${op.state} ${JSON.stringify(op.error)}`);
      const now = await c.call('services.get', { id: 'hello-http' }).catch(() => null);
      // Restored "running as before": active when the current users use it, else stopped.
      const used = (await c.call('users.get')).services.includes('hello-http');
      const want = used ? 'active' : 'inactive';
      if (now?.version !== model.services.get('hello-http') || now?.live?.activeState !== want) violate(round, 'rollback', `after ${p.label}: hello-http is v${now?.version} ${now?.live?.activeState}, expected v${model.services.get('hello-http')} ${want}`);
    }

    const delay = rnd.int(0, opts.maxDelayMs);
    const deadline = performance.now() + delay;
    const steps = [];
    let inFlight = null;
    // Send actions one after another until the kill time; the last may still be in flight.
    while (true) {
      const p = plan(choices());
      const sent = c.call(p.method, p.params).then(
        (reply) => ({ reply }),
        (error) => ({ error }),
      );
      const remaining = deadline - performance.now();
      const res = await Promise.race([sent, sleep(Math.max(0, remaining)).then(() => null)]);
      if (res === null) {
        inFlight = p;
        sent.catch(() => {});
        break;
      }
      steps.push(p.label);
      // A reply: acknowledged. Apply what it means to the model.
      const op = res.reply;
      if (res.error) {
        counts.unexpectedReplies++;
        violate(round, 'unexpected-error', `${p.label}: ${res.error.message}`);
        break;
      }
      if (op.state === 'succeeded') {
        counts.acknowledged++;
        if (!p.expectOk) violate(round, 'unexpected-success', `${p.label} succeeded`);
        model.services = p.post.services;
        model.users = p.post.users;
        if (!p.expectOk) model.services = new Map(model.services).set(p.id, p.params.version);
      } else if (op.state === 'failed') {
        counts.acknowledged++;
        counts.acknowledgedFailures++;
        if (p.expectOk) violate(round, 'unexpected-failure', `${p.label} failed: ${JSON.stringify(op.error)}`);
        else if (!/restored/.test(op.error?.message ?? '')) violate(round, 'rollback-message', `${p.label}: ${op.error?.message}`);
        // A failed install changes nothing (fresh: absent; update: previous version restored).
        model.services = p.pre.services;
        model.users = p.pre.users;
      } else {
        counts.unexpectedReplies++;
        violate(round, 'unfinished-reply', `${p.label}: wait returned state ${op.state}`);
      }
      if (performance.now() >= deadline) break;
    }
    await killSmd();
    if (inFlight) {
      counts.inFlight++;
      inFlightByKind[inFlight.kind] = (inFlightByKind[inFlight.kind] ?? 0) + 1;
    }
    const what = [...steps, inFlight ? `${inFlight.label} (in flight)` : null].filter(Boolean).join('; ') || '(nothing)';

    try {
      await startSmd(round);
    } catch (err) {
      violate(round, 'restart', `${err.message} after: ${what}`);
      break;
    }
    readyMs.push(smd.readyMs);
    const actual = await actualState(smd.client);

    // Acknowledged effects: the state is the model's, or (for the action in flight) its outcome.
    const allowed = inFlight ? [inFlight.pre, inFlight.post] : [model];
    const ids = new Set([...APPS, ...actual.services.keys()]);
    let matched = null;
    for (const cand of allowed) {
      const ok = [...ids].every((id) => cand.services.get(id) === actual.services.get(id)) && cand.users === actual.users;
      if (ok) {
        matched = cand;
        break;
      }
    }
    const show = (s) => `${JSON.stringify(Object.fromEntries(s.services))} users ${s.users}`;
    if (!matched) {
      violate(round, 'acknowledged-effect', `after ${what}: expected ${allowed.map(show).join(' or ')}, found ${show(actual)}`);
      model.services = actual.services;
      model.users = actual.users;
    } else {
      if (inFlight) matched === inFlight.post && inFlight.post !== inFlight.pre ? counts.inFlightApplied++ : counts.inFlightNotApplied++;
      model.services = new Map(matched.services);
      model.users = matched.users;
    }

    // The shared invariants, then the stricter ones.
    for (const p of await checkInvariants(paths)) violate(round, 'invariant', `${p} (after ${what})`);
    const live = {};
    for (const [id, state] of Object.entries(actual.live)) live[id] = state;
    for (const p of await checkExtraInvariants({ ...paths, live, traffic: true, chainName: serviceChain })) violate(round, 'invariant-extra', `${p} (after ${what})`);
    for (const [id, state] of Object.entries(actual.live)) {
      if (!actual.attached.has(id) && (state === 'active' || state === 'activating')) violate(round, 'runs-unattached', `${id} is ${state} but not used by ${actual.users} (after ${what})`);
    }

    // Traffic totals never go backwards within a period.
    const now = trafficSnapshot(await smd.client.call('traffic.get'));
    for (const [chain, before] of trafficSeen) {
      const after = now.get(chain);
      if (!after || after.periodStart !== before.periodStart) continue;
      if (after.bytes < before.bytes) violate(round, 'traffic-backwards', `${chain}: ${before.bytes} bytes before the kill, ${after.bytes} after (lost ${before.bytes - after.bytes}; after ${what})`);
    }
    for (const v of now.values()) lastPeriodStart = v.periodStart;
    roundMs.push(performance.now() - r0);
    log(`round ${round}/${opts.kills}: ${what} -> ${show(actual)} (${Math.round(performance.now() - r0)} ms)`);
  }
  const totalMs = performance.now() - t0;
  if (smd) {
    smd.client.close();
    smd.proc.kill('SIGTERM');
    const timer = setTimeout(() => smd?.proc.kill('SIGKILL'), 20_000);
    await smd.exited;
    clearTimeout(timer);
  }
  smdLog.end();

  const sorted = [...roundMs].sort((a, b) => a - b);
  const figures = [
    figure('kills', roundMs.length, 'kills'),
    figure('time per kill (median: traffic, actions, kill, restart, checks)', median(roundMs), 'ms'),
    figure('time per kill (p90)', percentile(sorted, 90), 'ms'),
    figure('total time', totalMs / 1000, 's'),
    figure('restart to READY=1 (median)', median(readyMs), 'ms'),
    figure('restart to READY=1 (max)', Math.max(...readyMs), 'ms'),
    figure('acknowledged replies', counts.acknowledged, 'ops', { failedAsExpected: counts.acknowledgedFailures }),
    figure('actions in flight at the kill', counts.inFlight, 'ops', { byKind: inFlightByKind, appliedAfterRestart: counts.inFlightApplied, notApplied: counts.inFlightNotApplied }),
    figure('HTTP bytes fetched from hello-http', counts.trafficBytesFetched, 'bytes'),
    figure('violations by kind', violations.length, 'violations', { byKind: kinds }),
  ];
  const report = { name: 'crash', seed: opts.seed, kills: roundMs.length, violations: violations.length, details: violations.slice(0, 20), figures, log: logPath, periodStart: lastPeriodStart };
  process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  process.exitCode = violations.length > 0 ? 1 : 0;
}

function execNode(args) {
  return new Promise((res, rej) => {
    const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('exit', (code) => (code === 0 ? res(out) : rej(new Error(`node ${args.join(' ')} exited ${code}`))));
  });
}

/** GET a page, bounded; resolves with the bytes received. */
function httpGet(url) {
  return new Promise((res, rej) => {
    const req = http.get(url, { timeout: 2000, agent: false }, (r) => {
      let n = 0;
      r.on('data', (d) => (n += d.length));
      r.on('end', () => res(n));
      r.on('error', rej);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', rej);
  });
}
