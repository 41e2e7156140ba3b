// Simulated devices for the fleet bench (scripts/bench/fleet.mjs): this process runs `count`
// real fleet bridges (dist/fleet/bridge.js, with the real outbox on an in-memory SQLite each)
// against one broker, each with a stand-in for the rest of smd: a dispatcher that answers the
// reads the report makes and runs `state.apply` as a short fake operation, and the real event
// bus. Driven over IPC by the parent: {op:'start'} → {ev:'started'}; {op:'stats'} → {ev:'stats'};
// {op:'stop'} → exits.
import Database from 'better-sqlite3';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';

const ROOT = join(import.meta.dirname, '../../..');
const { FleetBridge } = await import(join(ROOT, 'dist/fleet/bridge.js'));
const { Outbox } = await import(join(ROOT, 'dist/fleet/outbox.js'));
const { EventBus } = await import(join(ROOT, 'dist/events/bus.js'));
const OUTBOX_SQL = readFileSync(join(ROOT, 'drizzle/0006_fleet_outbox.sql'), 'utf8').split('--> statement-breakpoint').join('\n');
const APPLY_MS = Number(process.env.BENCH_FLEET_APPLY_MS ?? 200);

const quiet = { debug() {}, info() {}, warn() {}, error: (m, f) => process.stderr.write(`fleet-devices: ${m} ${JSON.stringify(f ?? {}, (k, v) => (v instanceof Error ? v.message : v))}\n`) };
quiet.child = () => quiet;

/** The rest of smd, as far as the bridge sees it: the dispatcher's calls, one fake device. */
function standIn(bus) {
  const started = Date.now();
  let services = [];
  let applied = null;
  let lastSucceeded = null;
  const ops = new Map();
  let opSeq = 0;
  const call = async (method, params) => {
    switch (method) {
      case 'state.get':
        return { applied, lastSucceeded };
      case 'services.list':
        return services;
      case 'layers.list':
        return [];
      case 'users.get':
        return { users: [] };
      case 'system.info':
        return { name: 'smd', version: '0.0.0-bench', systemVersion: null, uptimeMs: Date.now() - started };
      case 'state.apply': {
        const desired = params.desired;
        const id = `op-${++opSeq}`;
        const op = { id, kind: 'state.apply', target: `v${desired.version}`, state: 'running', progress: 0, step: null, error: null };
        applied = { version: desired.version, operationId: id, state: 'running', error: null };
        bus.publish('operation', { ...op });
        const done = new Promise((res) =>
          setTimeout(() => {
            services = desired.services.map((s) => ({ id: s.id, version: s.version, state: 1, status: 0 }));
            for (const s of services) bus.publish('service', { id: s.id, state: 1, status: 0 });
            op.state = 'succeeded';
            op.progress = 1;
            applied = { ...applied, state: 'succeeded' };
            lastSucceeded = { version: desired.version };
            bus.publish('operation', { ...op });
            res();
          }, APPLY_MS),
        );
        ops.set(id, { op, done });
        return { ...op };
      }
      case 'operations.wait': {
        const o = ops.get(params.id);
        await o.done;
        return { ...o.op };
      }
      default:
        throw Object.assign(new Error(`Method not found: ${method}`), { code: -32601 });
    }
  };
  return { call, handle: async () => null };
}

const attempts = [];
const connects = [];
const bridges = [];
let base = null;

function gc() {
  globalThis.gc?.();
  globalThis.gc?.();
}

async function start({ url, from, count, prefix }) {
  gc();
  base = process.memoryUsage();
  for (let i = from; i < from + count; i++) {
    const deviceId = `dev-${i}`;
    const bus = new EventBus(quiet);
    const sqlite = new Database(':memory:');
    sqlite.exec(OUTBOX_SQL);
    const config = {
      enabled: true,
      url,
      deviceId,
      topicPrefix: prefix,
      allowMutations: false,
      keepaliveSec: 30,
      connectTimeoutMs: 10_000,
      reconnect: { minMs: 1000, maxMs: 60_000 }, // smd's defaults
      report: { debounceMs: 250, maxWaitMs: 1000 },
      outbox: { maxMessages: 10_000 },
    };
    const n = bridges.length;
    connects[n] = [];
    const bridge = new FleetBridge({
      config,
      rpc: standIn(bus),
      bus,
      outbox: new Outbox({ $client: sqlite }, { maxMessages: config.outbox.maxMessages }),
      logger: quiet,
      maxRpcBytes: 1 << 20,
      connect: (u, opts) => {
        attempts.push(Date.now());
        const client = mqtt.connect(u, opts);
        client.on('connect', () => connects[n].push(Date.now()));
        return client;
      },
    });
    bridges.push(bridge);
    await bridge.start();
  }
}

process.on('message', async (m) => {
  try {
    if (m.op === 'start') {
      await start(m);
      process.send({ ev: 'started' });
    } else if (m.op === 'stats') {
      let mem = null;
      if (m.memory) {
        gc();
        const now = process.memoryUsage();
        mem = { rss: (now.rss - base.rss) / bridges.length, heapUsed: (now.heapUsed - base.heapUsed) / bridges.length, external: (now.external - base.external) / bridges.length };
      }
      process.send({ ev: 'stats', attempts, connects, connected: bridges.map((b) => b.status_().connection === 'connected'), mem });
    } else if (m.op === 'stop') {
      await Promise.all(bridges.map((b) => b.stop(1000)));
      process.exit(0);
    }
  } catch (err) {
    process.send({ ev: 'error', error: String(err?.stack ?? err) });
  }
});
process.send({ ev: 'ready' });
