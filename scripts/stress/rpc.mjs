#!/usr/bin/env node
// Stress of smd's JSON-RPC server against the real compiled daemon (issue 8, part 2).
//
//   node scripts/stress/rpc.mjs [--seed N] [--messages N] [--seconds N] [--clients N]
//
// 1. Hostile input: --messages (50,000) generated malformed or hostile messages (seeded; the seed
//    is printed, --seed N replays it) over 16 long-lived connections (12 on the control socket,
//    4 on the read-only one) plus short-lived ones that send oversized lines, hang up mid-line
//    or never read. An oracle (scripts/stress/lib/fuzz.mjs) says which replies each byte stream
//    is owed; per connection we count requests owed vs replies received, and connections the
//    server closed, with the reason. Targets: smd never exits, nothing owed goes unanswered on a
//    connection the server kept open, no malformed or unasked-for replies.
// 2. Load: --clients (64) clients issue a mix of reads and writes for --seconds (60): no
//    unexpected errors, p50/p99 latency, smd's RSS sampled each second, growth of the median of
//    the last 10 s over the first 10 s below 10 %.
// smd runs outside any sandbox with traffic disabled and systemd on a bus that does not exist
// (startSmd does both), so nothing but its Unix sockets is touched. Prints one JSON object and
// exits 1 when a target is missed.
import { parseArgs } from 'node:util';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { scratchDir, ROOT } from '../bench/lib/smd.mjs';
import { startSmdInside } from './lib/sandbox.mjs';
import { figure, median, percentile, round } from '../bench/lib/stats.mjs';
import { mulberry32, hostileMessage, notificationFlood, int, pick } from './lib/fuzz.mjs';
import { AccountedConnection } from './lib/conn.mjs';

const { RpcClient } = await import(join(ROOT, 'dist/cli/client.js'));

const { values: argv } = parseArgs({
  options: {
    seed: { type: 'string' },
    messages: { type: 'string', default: '50000' },
    seconds: { type: 'string', default: '60' },
    clients: { type: 'string', default: '64' },
    keep: { type: 'boolean', default: false },
  },
});
const seed = argv.seed !== undefined ? Number(argv.seed) >>> 0 : (Date.now() ^ (process.pid << 16)) >>> 0;
const MESSAGES = Number(argv.messages);
const SECONDS = Number(argv.seconds);
const CLIENTS = Number(argv.clients);
const LIMITS = { maxBatch: 1000, maxRequestBytes: 1048576 }; // smd's defaults (README: rpc.*)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => process.stderr.write(`[stress/rpc] ${a.join(' ')}\n`);

const dir = scratchDir('smd-stress-rpc-');
/**
 * smd on scratch directories, resolved at READY=1: no traffic accounting (the host's firewall is
 * never touched) and systemd on a bus that does not exist (no host systemd is ever reached).
 */
async function start(name) {
  const d = join(dir, name);
  const smd = await startSmdInside(null, dir, {
    dataDir: join(d, 'data'),
    runDir: join(d, 'run'),
    logLevel: 'warn',
    rpc: LIMITS,
    traffic: { enabled: false },
    systemd: { bus: `unix:path=${join(d, 'no-bus')}`, unitDir: join(d, 'units') },
  });
  smd.crash = null;
  smd.proc.once('exit', (code, signal) => (smd.crash = { code, signal, at: new Date().toISOString() }));
  smd.readOnlySocket = join(d, 'run/smd-ro.sock');
  return smd;
}
/** SIGTERM and wait (bounded): the exit code, 'timeout' (then SIGKILL) or the crash it had before. */
async function stopSmd(smd) {
  if (smd.crash) return smd.crash;
  const e = await smd.stop('SIGTERM', 20_000);
  return e.signal === 'SIGKILL' ? 'timeout' : e.code;
}

let smd = await start('hostile');
const readOnlySocket = smd.readOnlySocket;
log(`seed ${seed} (replay with --seed ${seed}); smd pid ${smd.proc.pid}; ready in ${round(smd.startMs, 0)} ms`);
const hostileRss = [];
const hostileSampler = setInterval(() => {
  try {
    hostileRss.push(smd.rssKb());
  } catch {
    /* gone: reported as a crash */
  }
}, 1000);

// ---------------------------------------------------------------------------------------------
// Phase 1: hostile input.

/** The plan: episodes drawn from the seed; message content is generated from each episode's own seed. */
function plan(rnd, total) {
  const episodes = [];
  let n = 0;
  let slowReaders = 0;
  while (n < total) {
    const r = rnd();
    const e = { seed: Math.floor(rnd() * 2 ** 32) };
    if (r < 0.8) Object.assign(e, { kind: 'stream', conn: int(rnd, 0, 15), count: int(rnd, 20, 400), chunked: rnd() < 0.15 });
    else if (r < 0.88) Object.assign(e, { kind: 'flood', conn: int(rnd, 0, 15), count: int(rnd, 200, 2000) });
    else if (r < 0.94) Object.assign(e, { kind: 'abrupt', count: int(rnd, 1, 100), delayMs: pick(rnd, [0, 0, 1, 5, 20]) });
    else if (r < 0.98 || slowReaders >= 3) Object.assign(e, { kind: 'oversize', count: int(rnd, 0, 50), inflight: rnd() < 0.3, bytes: LIMITS.maxRequestBytes + int(rnd, 1, LIMITS.maxRequestBytes), newline: rnd() < 0.5, after: int(rnd, 0, 5) });
    else Object.assign(e, { kind: 'slow-reader', count: int(rnd, 300, 1200) }, (slowReaders += 1, {}));
    // Slow readers come on top of the total: smd may rightly hang up on them before all is sent.
    if (e.kind !== 'slow-reader') {
      e.count = Math.min(e.count, total - n) || 1;
      n += e.count + (e.kind === 'oversize' ? 1 + e.after : 0);
    }
    episodes.push(e);
  }
  return episodes;
}

const kinds = new Map();
/** `conn` is a connection, or a function giving the live one (persistent slots reconnect). */
async function runEpisode(conn, e) {
  const current = typeof conn === 'function' ? conn : async () => conn;
  const rnd = mulberry32(e.seed);
  if (e.kind === 'flood') {
    await (await current()).send(notificationFlood(rnd, e.count), { counted: e.count });
    kinds.set('notification-flood', (kinds.get('notification-flood') ?? 0) + e.count);
    return;
  }
  for (let i = 0; i < e.count; i++) {
    const m = hostileMessage(rnd);
    kinds.set(m.kind, (kinds.get(m.kind) ?? 0) + 1);
    const c = await current();
    if (!(await c.send(m.bytes, { chunks: e.chunked && rnd() < 0.5 ? int(rnd, 2, 6) : 1, rnd }))) {
      if (typeof conn !== 'function') return;
      await c.closed; // hung up on: the next message goes over a new connection
      await (await current()).send(m.bytes, { rnd });
    }
    // Let replies in between: this phase is about hostile input, not about a client that does
    // not read (that is the slow-reader scenario); smd drops clients whose output queue grows.
    await new Promise((r) => setImmediate(r));
  }
}

const persistent = [];
for (let i = 0; i < 16; i++) {
  const c = new AccountedConnection(i < 12 ? smd.socket : readOnlySocket, i < 12 ? `control-${i}` : `read-only-${i - 12}`, { limits: LIMITS });
  await c.connected;
  persistent.push(c);
}
const shortLived = [];

async function runShortLived(e, index) {
  const rnd = mulberry32(e.seed ^ 0x9e3779b9);
  const path = rnd() < 0.8 ? smd.socket : readOnlySocket;
  const c = new AccountedConnection(path, `${e.kind}-${index}`, { limits: LIMITS, reading: e.kind !== 'slow-reader' });
  shortLived.push(c);
  try {
    await c.connected;
  } catch (err) {
    c.connectError = String(err.code ?? err.message);
    return;
  }
  if (e.kind === 'abrupt') {
    c.abandoned = true; // we hang up: what it was owed is not counted as unanswered
    await runEpisode(c, e);
    const partial = hostileMessage(rnd).bytes;
    c.sendFragment(partial.subarray(0, Math.max(1, Math.floor(partial.length * rnd()))));
    if (e.delayMs) await sleep(e.delayMs);
    await c.close();
    return;
  }
  if (e.kind === 'oversize') {
    await runEpisode(c, e);
    if (!e.inflight) await c.settle({ quietMs: 30_000 });
    c.owedBeforeOversize = c.requestsOwed;
    c.unansweredBeforeOversize = c.unanswered();
    const head = Buffer.from('{"jsonrpc":"2.0","id":"big","method":"system.info","params":{"pad":"');
    const big = Buffer.alloc(e.bytes, 0x78);
    head.copy(big);
    const msgs = [big];
    if (e.newline) msgs.push(Buffer.from('\n'));
    for (let i = 0; i < e.after; i++) msgs.push(Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: `after-${i}`, method: 'system.info' }) + '\n'));
    await c.send(Buffer.concat(msgs), { counted: 1 + e.after });
    // The server answers what came complete before the oversized line, then closes. With requests
    // in flight (e.g. an install with wait: true queued behind others under this load) that can
    // take more than 10 s: 10 s flagged such healthy connections as kept open.
    await Promise.race([c.closed, sleep(60_000)]);
    if (!c.closedByServer) await c.close();
    return;
  }
  if (e.kind === 'slow-reader') {
    const line = Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'rpc.discover' }) + '\n');
    for (let i = 0; i < e.count; i++) {
      if (!(await Promise.race([c.send(line), sleep(2_000).then(() => 'stuck')]))) break;
    }
    kinds.set('slow-reader', (kinds.get('slow-reader') ?? 0) + e.count);
    await sleep(3_000); // let the server notice that nobody reads
    c.resume();
    await c.settle({ quietMs: 10_000, timeoutMs: 60_000 });
    if (!c.closedByServer) await c.close();
  }
}

const rnd = mulberry32(seed);
const episodes = plan(rnd, MESSAGES);
const started = performance.now();
const byConn = persistent.map(() => []);
const scenarios = [];
for (const e of episodes) (e.kind === 'stream' || e.kind === 'flood' ? byConn[e.conn] : scenarios).push(e);

const reopened = [];
const persistentRuns = persistent.map(async (first, i) => {
  let c = first;
  // A client that smd hung up on (it logs why) connects again, as a real one would.
  const current = async () => {
    if (c.closedByServer || c.socket.destroyed) {
      await c.closed;
      c = new AccountedConnection(i < 12 ? smd.socket : readOnlySocket, `${first.name}.${reopened.filter((r) => r.name.startsWith(first.name + '.')).length + 1}`, { limits: LIMITS });
      reopened.push(c);
      await c.connected;
    }
    return c;
  };
  for (const e of byConn[i]) await runEpisode(current, e);
  // A final known request: its reply (and the settle after it) closes the books.
  await (await current()).send(Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: `sentinel-${c.name}`, method: 'system.info' }) + '\n'), { counted: 0 });
  await c.settle();
});
let next = 0;
const scenarioRuns = Array.from({ length: 4 }, async () => {
  while (next < scenarios.length) {
    const i = next++;
    await runShortLived(scenarios[i], i);
  }
});
await Promise.all([...persistentRuns, ...scenarioRuns]);
const fuzzSeconds = (performance.now() - started) / 1000;

const all = [...persistent, ...reopened, ...shortLived];
const sum = (cs, f) => cs.reduce((n, c) => n + f(c), 0);
const slowReaders = shortLived.filter((c) => c.name.startsWith('slow-reader'));
const messagesSent = sum(all, (c) => c.messages) - sum(slowReaders, (c) => c.messages);
const keptOpen = all.filter((c) => !c.abandoned && !c.closedByServer);
const serverClosed = all.filter((c) => c.closedByServer);
const oversize = shortLived.filter((c) => c.name.startsWith('oversize'));
// Oversized lines sent after every earlier reply came: those earlier requests must all be answered.
const answeredFirst = oversize.filter((c) => c.unansweredBeforeOversize !== undefined && !scenarios[Number(c.name.split('-')[1])].inflight);
const unanswered = sum(keptOpen, (c) => c.unanswered()) + sum(answeredFirst, (c) => c.unansweredBeforeOversize);
const droppedAtClose = sum(serverClosed, (c) => c.unanswered()) - sum(answeredFirst.filter((c) => c.closedByServer), (c) => c.unansweredBeforeOversize);
const unexpectedReplies = sum(all, (c) => c.unexpected() + c.malformedReplies.length);
const closeReasons = {};
for (const c of serverClosed) closeReasons[c.closeReason] = (closeReasons[c.closeReason] ?? 0) + 1;
const oversizeClosedCleanly = oversize.filter((c) => c.closedByServer && c.oversizeAnswered).length;
const codes = {};
const internal = {};
for (const c of all) {
  for (const [k, v] of c.codes) codes[k] = (codes[k] ?? 0) + v;
  for (const [k, v] of c.internal) internal[k] = (internal[k] ?? 0) + v;
}
for (const c of [...persistent, ...reopened]) await c.close();
clearInterval(hostileSampler);
const aliveAfterFuzz = smd.crash === null;
let infoAfterFuzz = null;
if (aliveAfterFuzz) {
  const client = await RpcClient.connect(smd.socket);
  infoAfterFuzz = await client.call('system.info').then((r) => r.name === 'smd', () => false);
  client.close();
}
const hostileLog = smd.logCounts();
const hostileCrash = smd.crash;
const hostileStop = await stopSmd(smd);
log(`phase 1: ${messagesSent} messages in ${round(fuzzSeconds, 1)} s; unanswered ${unanswered}; server closes ${serverClosed.length}; smd alive ${aliveAfterFuzz}; stop ${JSON.stringify(hostileStop)}`);

// ---------------------------------------------------------------------------------------------
// Phase 2: 64 clients, mixed reads and writes, for SECONDS; RSS every second.

const MIX = [
  ['system.info', 30, () => undefined],
  ['services.list', 15, () => ({})],
  ['operations.list', 15, (r) => (r() < 0.5 ? { limit: 20 } : {})],
  ['db.tables', 10, () => ({})],
  ['system.setVersion', 12, (r) => ({ version: int(r, 1, 5) })],
  ['events.subscribe', 6, (r) => ({ topics: [pick(r, ['operation', 'service', 'alert', 'users', 'traffic'])] })],
  ['events.unsubscribe', 6, (r) => ({ topics: [pick(r, ['operation', 'service', 'alert', 'users', 'traffic'])] })],
  ['layers.prune', 6, () => ({ wait: true })],
];
const totalWeight = MIX.reduce((n, m) => n + m[1], 0);
const chooseCall = (r) => {
  let x = r() * totalWeight;
  for (const m of MIX) if ((x -= m[1]) < 0) return m;
  return MIX[0];
};

const latencies = [];
const perMethod = {};
const errors = {};
let calls = 0;
let events = 0;
const rss = [];
let load = null;
smd = await start('load');
log(`phase 2: fresh smd pid ${smd.proc.pid}; ${CLIENTS} clients for ${SECONDS} s`);
{
  const clients = await Promise.all(Array.from({ length: CLIENTS }, () => RpcClient.connect(smd.socket)));
  for (const c of clients) c.onNotification(() => events++);
  const stopAt = Date.now() + SECONDS * 1000;
  const sampler = setInterval(() => {
    try {
      rss.push(smd.rssKb());
    } catch {
      /* gone: reported as a crash */
    }
  }, 1000);
  rss.push(smd.rssKb());
  const t0 = performance.now();
  await Promise.all(
    clients.map(async (client, i) => {
      const r = mulberry32(seed + 7919 * (i + 1));
      while (Date.now() < stopAt && smd.crash === null) {
        const [method, , params] = chooseCall(r);
        const p = params(r);
        const s = performance.now();
        try {
          await client.call(method, p);
          const ms = performance.now() - s;
          latencies.push(ms);
          (perMethod[method] ??= []).push(ms);
        } catch (err) {
          const key = `${method}: ${err.code ?? err.rpcCode ?? ''} ${err.message}`.slice(0, 200);
          errors[key] = (errors[key] ?? 0) + 1;
          if (/connection to smd closed/.test(err.message)) break;
        }
        calls++;
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  clearInterval(sampler);
  for (const c of clients) c.close();
  load = { seconds };
}
latencies.sort((a, b) => a - b);
const unexpectedErrors = Object.values(errors).reduce((a, b) => a + b, 0);
const windowS = Math.min(10, Math.floor(rss.length / 2));
const rssFirst = median(rss.slice(0, windowS));
const rssLast = median(rss.slice(-windowS));
const rssGrowth = ((rssLast - rssFirst) / rssFirst) * 100;

const loadCrash = smd.crash;
const loadLog = smd.logCounts();
// A clean stop proves the daemon is still whole after all this.
const loadStop = await stopSmd(smd);
const crashes = (hostileCrash ? 1 : 0) + (loadCrash ? 1 : 0);

const figures = [
  figure('hostile messages sent', messagesSent, 'messages', { target: `>= ${MESSAGES}` }),
  figure('slow-reader requests (on top, never read until the end)', sum(slowReaders, (c) => c.messages), 'messages'),
  figure('smd crashes', crashes, 'count', { target: '<= 0' }),
  figure('unanswered requests (connections the server kept open)', unanswered, 'requests', { target: '<= 0' }),
  figure('requests owed a reply (hostile phase)', sum(all.filter((c) => !c.abandoned), (c) => c.requestsOwed), 'requests'),
  figure('replies received (hostile phase)', sum(all, (c) => c.replies), 'replies'),
  figure('malformed or unasked-for replies', unexpectedReplies, 'replies', { target: '<= 0' }),
  figure('connections closed by the server', serverClosed.length, 'connections'),
  figure('  of which smd logged "client is not reading its replies" (output backlog over 16 MiB)', hostileLog['warn: rpc client is not reading its replies; disconnecting'] ?? 0, 'connections'),
  figure('oversized messages answered -32600 then closed', oversizeClosedCleanly, 'connections', { target: `>= ${oversize.length}` }),
  figure('requests dropped when the server closed a connection', droppedAtClose, 'requests'),
  figure('system.info answers after the hostile phase', infoAfterFuzz ? 1 : 0, 'bool', { target: '>= 1' }),
  figure('clean stop after the hostile phase (exit code)', hostileStop === 0 ? 0 : 1, 'code', { target: '<= 0' }),
  figure('RSS peak during the hostile phase', Math.max(...hostileRss), 'KiB'),
  figure('load calls', calls, 'calls'),
  figure('load throughput', calls / (load?.seconds ?? 1), 'calls/s'),
  figure('unexpected errors under load', unexpectedErrors, 'count', { target: '<= 0' }),
  figure('load latency p50', percentile(latencies, 50), 'ms'),
  figure('load latency p99', percentile(latencies, 99), 'ms'),
  figure('RSS first 10 s (median)', rssFirst, 'KiB'),
  figure('RSS last 10 s (median)', rssLast, 'KiB'),
  figure('RSS growth', rssGrowth, '%', { target: '< 10' }),
  figure('clean stop after the load (exit code)', loadStop === 0 ? 0 : 1, 'code', { target: '<= 0' }),
];
const result = {
  name: 'stress-rpc',
  seed,
  replay: `node scripts/stress/rpc.mjs --seed ${seed} --messages ${MESSAGES} --seconds ${SECONDS} --clients ${CLIENTS}`,
  figures,
  hostile: {
    seconds: round(fuzzSeconds, 1),
    episodes: episodes.length,
    kinds: Object.fromEntries([...kinds].sort()),
    replyCodes: codes,
    internalErrors: internal,
    serverCloses: closeReasons,
    smdLog: hostileLog,
    rssKb: hostileRss,
    shortLivedConnections: shortLived.length,
    connections: [...persistent, ...reopened].map((c) => c.summary()),
    shortLivedWithIssues: shortLived.filter((c) => (!c.abandoned && c.unanswered() > 0) || c.unexpected() > 0 || c.connectError).map((c) => ({ ...c.summary(), ...(c.connectError ? { connectError: c.connectError } : {}) })),
    malformedReplySamples: all.flatMap((c) => c.malformedReplies).slice(0, 5),
  },
  load: {
    clients: CLIENTS,
    seconds: round(load?.seconds ?? 0, 1),
    events,
    p99ByMethod: Object.fromEntries(Object.entries(perMethod).map(([m, v]) => [m, round(percentile(v.sort((a, b) => a - b), 99), 2)])),
    errors,
    smdLog: loadLog,
    rssKb: rss,
  },
  crashes: { hostile: hostileCrash, load: loadCrash },
};
process.stdout.write(JSON.stringify(result, null, 2) + '\n');
if (!argv.keep) rmSync(dir, { recursive: true, force: true });
process.exit(figures.every((f) => f.met !== false) ? 0 : 1);
