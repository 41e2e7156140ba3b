/**
 * Fuzz of every topic smd subscribes to (`desired`, `rpc`), against the real smd and a real
 * Mosquitto: a few hundred generated malformed payloads — random bytes, truncated JSON, wrong
 * types, huge numbers, deep nesting within limits, oversize. Each one, in turn, must be
 * answered: a `desired` one by a `refused` event (or ignored: the empty payload), an `rpc` one
 * by the reply the JSON-RPC rules owe it (an error with its id, a parse error with id null, none
 * for a notification). Afterwards smd still answers on its socket, `fleet.status` says connected
 * on the same connection, and smd logged no failed handler.
 *
 * A seeded PRNG (mulberry32): FLEET_FUZZ_SEED=<n> reproduces a run; the seed is printed.
 */
import t from 'tap';
import { isDeepStrictEqual } from 'node:util';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon, tempDir } from '../helpers/daemon.js';
import { startMosquitto, type Received } from '../helpers/mosquitto.js';
import { startSandbox } from '../helpers/sandbox.js';

const SEED = Number(process.env.FLEET_FUZZ_SEED ?? 0x5eed17);
const N_DESIRED = 150;
const N_RPC = 250;
const MAX_RPC_BYTES = 64 * 1024; // rpc.maxRequestBytes of this smd: oversize is cheap to make
const MAX_BATCH = 100; // rpc.maxBatch of this smd

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

interface Gen {
  r: () => number;
  int(n: number): number;
  pick<T>(xs: readonly T[]): T;
}
function gen(seed: number): Gen {
  const r = mulberry32(seed);
  return { r, int: (n) => Math.floor(r() * n), pick: (xs) => xs[Math.floor(r() * xs.length)]! };
}

const HUGE = ['1e308', '1e400', '-1e400', '9007199254740993', '-1', '-0', '0.5', '1E+2', '123456789012345678901234567890'];
/** JSON text of a value of a random wrong type (or a huge number). */
function wrongValue(g: Gen, depth = 0): string {
  switch (g.int(depth > 2 ? 7 : 9)) {
    case 0: return g.pick(HUGE);
    case 1: return JSON.stringify('x'.repeat(g.int(40)));
    case 2: return g.pick(['true', 'false', 'null']);
    case 3: return String(g.int(1000));
    case 4: return JSON.stringify(String.fromCharCode(...Array.from({ length: g.int(12) }, () => g.int(0xd7ff))));
    case 5: return '[]';
    case 6: return '{}';
    case 7: return `[${Array.from({ length: g.int(4) }, () => wrongValue(g, depth + 1)).join(',')}]`;
    default: return `{${Array.from({ length: g.int(4) }, (_, i) => `${JSON.stringify(g.pick(['id', 'version', 'image', 'services', 'layers', 'settings', `k${i}`]))}:${wrongValue(g, depth + 1)}`).join(',')}}`;
  }
}
/** Nested arrays/objects `depth` deep (well within V8's JSON.parse limits). */
function deep(g: Gen, depth: number): string {
  const obj = g.r() < 0.5;
  return (obj ? '{"a":' : '[').repeat(depth) + wrongValue(g, 3) + (obj ? '}' : ']').repeat(depth);
}
function randomBytes(g: Gen): Buffer {
  return Buffer.from(Array.from({ length: 1 + g.int(200) }, () => g.int(256)));
}
function truncate(g: Gen, text: string): string {
  return text.slice(0, Math.max(1, g.int(text.length - 1)));
}

/** A malformed desired state: never a valid DesiredState (a valid one would be applied). */
function desiredPayload(g: Gen, n: number): Buffer {
  const valid = JSON.stringify({ version: n + 1, services: [{ id: 'hello-http', version: 1, image: '/nonexistent/hello.tar' }], layers: [] });
  let text: string;
  switch (g.int(8)) {
    case 0: return randomBytes(g);
    case 1: text = truncate(g, valid); break;
    case 2: text = `{"version":${g.pick(HUGE)},"services":[],"layers":[]}`; break;
    case 3: text = `{"version":${n + 1},"services":${wrongValue(g)},"layers":${wrongValue(g)}}`; break;
    case 4: text = `{"version":${n + 1},"services":[${wrongValue(g)}],"layers":[],"nested":${deep(g, 50 + g.int(400))}}`; break;
    case 5: text = wrongValue(g); break;
    case 6: text = `{"version":${n + 1},"services":[{"id":${JSON.stringify('y'.repeat(1 << 20))},"version":1,"image":"/x"}],"layers":[]}`; break; // oversize: > 1 MiB
    default: text = `{"version":${n + 1},"services":[{"id":"hello-http","version":${g.pick(HUGE)},"image":${wrongValue(g)}}]}`;
  }
  // Whatever parses to an object with a usable version gets a key the strict schema refuses.
  try {
    const v = JSON.parse(text) as { version?: unknown };
    if (v && typeof v === 'object' && !Array.isArray(v) && Number.isSafeInteger(v.version)) text = text.replace(/^\{/, `{"fuzz${n}":${n},`);
  } catch {
    // not JSON: refused as such
  }
  return Buffer.from(text);
}

const METHODS = ['system.info', 'services.list', 'services.get', 'services.logs', 'state.get', 'state.apply', 'operations.get', 'operations.list', 'operations.wait', 'fleet.status', 'system.health', 'events.subscribe', 'events.unsubscribe', 'services.stop', 'users.get', 'nope.nothing', ''];

/** An rpc payload and the reply it is owed: `{id}` (a reply with that id), or none (a notification). */
function rpcPayload(g: Gen, n: number): Buffer {
  const tag = `fz-${n}`;
  const params = () => g.pick([wrongValue(g), `{"id":${wrongValue(g)},"lines":${g.pick(HUGE)},"timeoutMs":${g.pick(['1', '0', '-5', '1e308', '"x"'])}}`, deep(g, 20 + g.int(300))]);
  const request = (id: string) => `{"jsonrpc":"2.0","id":${id},"method":${JSON.stringify(g.pick(METHODS))},"params":${params()}}`;
  switch (g.int(9)) {
    case 0: return randomBytes(g);
    case 1: return Buffer.from(truncate(g, request(JSON.stringify(tag))));
    case 2: return Buffer.from(request(JSON.stringify(tag)));
    case 3: return Buffer.from(`{"jsonrpc":${wrongValue(g)},"id":${JSON.stringify(tag)},"method":${wrongValue(g)}}`);
    case 4: return Buffer.from(request(g.pick([...HUGE, '{"a":1}', '[1]', 'true', 'null'])));
    case 5: return Buffer.from(`{"jsonrpc":"2.0","method":${JSON.stringify(g.pick(METHODS))},"params":${params()}}`); // a notification
    case 6: return Buffer.from(`[${request(JSON.stringify(tag))},${Array.from({ length: g.int(5) }, () => wrongValue(g)).join(',')}]`);
    case 7: return Buffer.from(g.pick(['[]', wrongValue(g), `[${Array.from({ length: MAX_BATCH + 1 }, () => '1').join(',')}]`]));
    default: return Buffer.from(`{"jsonrpc":"2.0","id":${JSON.stringify(tag)},"method":"system.info","pad":${JSON.stringify('z'.repeat(MAX_RPC_BYTES))}}`); // oversize
  }
}

/** What the dispatcher owes a payload, by the JSON-RPC rules: a reply with `id`, or nothing. */
function owed(payload: Buffer): { id: unknown; batch: boolean } | null {
  if (payload.length > MAX_RPC_BYTES) return { id: null, batch: false };
  let m: unknown;
  try {
    m = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload));
  } catch {
    return { id: null, batch: false };
  }
  const one = (x: unknown): { id: unknown } | null => {
    if (typeof x !== 'object' || x === null || Array.isArray(x)) return { id: null };
    const req = x as Record<string, unknown>;
    const hasId = Object.hasOwn(req, 'id');
    const validId = hasId && (typeof req.id === 'string' || typeof req.id === 'number' || req.id === null);
    if (req.jsonrpc !== '2.0' || typeof req.method !== 'string' || (hasId && !validId)) return { id: validId ? req.id : null };
    return hasId ? { id: req.id } : null;
  };
  // The reply is JSON: an id of 1e400 (Infinity) comes back null, -0 as 0.
  const norm = (o: { id: unknown } | null) => (o ? { id: JSON.parse(JSON.stringify(o.id) ?? 'null') as unknown } : null);
  if (Array.isArray(m)) {
    if (m.length === 0 || m.length > MAX_BATCH) return { id: null, batch: false };
    const first = m.map((x) => norm(one(x))).find((o) => o !== null);
    return first ? { id: first.id, batch: true } : null;
  }
  const o = norm(one(m));
  return o ? { id: o.id, batch: false } : null;
}

t.test(`fuzz of desired and rpc (seed ${SEED})`, async (t) => {
  t.comment(`FLEET_FUZZ_SEED=${SEED}`);
  const sb = await startSandbox(t);
  const dir = tempDir(t);
  const broker = await startMosquitto(t, sb, dir);
  const passwordFile = join(dir, 'smd-password');
  writeFileSync(passwordFile, `${broker.password}\n`, { mode: 0o600 });
  const base = 'smd/fuzz1';
  const topic = (n: string) => `${base}/${n}`;
  const fleet = { url: `mqtt://127.0.0.1:${broker.port}`, deviceId: 'fuzz1', username: broker.user, passwordFile, report: { debounceMs: 50, maxWaitMs: 200 } };
  const d = await startDaemon(t, { sandbox: sb, config: { fleet, rpc: { maxRequestBytes: MAX_RPC_BYTES, maxBatch: MAX_BATCH } } });
  t.teardown(() => {
    if (!t.passing()) console.error(`--- smd output (tail) ---\n${d.output().slice(-6000)}\n--- mosquitto ---\n${broker.output().slice(-3000)}`);
  });
  const c = await d.client();
  const watch = await broker.client([topic('events'), topic('rpc/reply'), topic('online')]);
  await watch.waitFor((m) => m.topic === topic('online') && m.text === 'true', 20_000, 'online true');
  const g = gen(SEED);
  const count = (pred: (m: Received) => boolean) => watch.messages.filter(pred).length;
  const parse = (m: Received): unknown => {
    try {
      return JSON.parse(m.text);
    } catch {
      return undefined;
    }
  };

  // desired: one at a time; each is refused (an event), none applied.
  const isRefusal = (m: Received) => m.topic === topic('events') && /"type":"desired"/.test(m.text) && /"state":"refused"/.test(m.text);
  let refused = 0;
  let last = '';
  for (let n = 0; n < N_DESIRED; n++) {
    const payload = desiredPayload(g, n);
    const text = payload.toString('utf8');
    if (text === last || text.length === 0) continue; // the bridge ignores a repeat or the empty one
    last = text;
    const before = count(isRefusal);
    await watch.publish(topic('desired'), payload as unknown as string);
    try {
      await watch.waitFor(() => count(isRefusal) > before, 10_000, `refusal of desired #${n}`);
    } catch (err) {
      t.fail(`desired #${n} (${payload.length} bytes) was not refused: ${payload.subarray(0, 200).toString('utf8')}`, { err });
      break;
    }
    refused++;
  }
  t.ok(refused >= N_DESIRED * 0.9, `${refused} malformed desired states, each refused`);
  t.notOk(watch.messages.some((m) => m.topic === topic('events') && /"type":"desired"/.test(m.text) && /"state":"(applying|applied|failed)"/.test(m.text)), 'none was applied');
  await watch.publish(topic('desired'), ''); // the cleared retained message: ignored

  // rpc: one at a time; each gets the reply it is owed.
  const replies = () => watch.messages.filter((m) => m.topic === topic('rpc/reply'));
  const withId = (id: unknown, batch: boolean) => (m: Received) => {
    const r = parse(m);
    return batch ? Array.isArray(r) && r.some((x: { id?: unknown }) => isDeepStrictEqual(x?.id, id)) : isDeepStrictEqual((r as { id?: unknown } | undefined)?.id, id);
  };
  let answered = 0;
  let notifications = 0;
  let results = 0;
  for (let n = 0; n < N_RPC; n++) {
    const payload = rpcPayload(g, n);
    const due = owed(payload);
    const before = due ? replies().filter(withId(due.id, due.batch)).length : 0;
    await watch.publish(topic('rpc'), payload as unknown as string);
    if (!due) {
      notifications++;
      continue;
    }
    try {
      const m = await watch.waitFor(() => replies().filter(withId(due.id, due.batch)).length > before, 10_000, `the reply to rpc #${n}`);
      void m;
    } catch (err) {
      t.fail(`rpc #${n} (${payload.length} bytes) got no reply with id ${JSON.stringify(due.id)}: ${payload.subarray(0, 200).toString('utf8')}`, { err });
      break;
    }
    const r = parse(replies().filter(withId(due.id, due.batch)).at(-1)!) as { result?: unknown; error?: { code: number } } | { result?: unknown }[];
    if (!Array.isArray(r) && r.result !== undefined) results++;
    answered++;
  }
  t.ok(answered + notifications === N_RPC, `${answered} rpc payloads answered as owed, ${notifications} notifications (${results} were valid reads)`);
  t.ok(replies().every((m) => parse(m) !== undefined), 'every reply is JSON');
  t.same(await c.call('operations.list'), [], 'no mutation ran (no operation at all)');

  // Afterwards: alive, answering, connected on the same connection, nothing logged as failed.
  t.equal(d.proc.exitCode, null, 'smd is running');
  t.match(await c.call('system.info'), { name: 'smd' }, 'answers on its socket');
  t.match(await c.call('fleet.status'), { connection: 'connected', connects: 1 }, 'fleet.status: connected, never reconnected');
  await watch.publish(topic('rpc'), JSON.stringify({ jsonrpc: '2.0', id: 'final', method: 'fleet.status' }));
  const fin = await watch.waitFor(withId('final', false), 10_000, 'the final rpc');
  t.match(JSON.parse(fin.text), { result: { connection: 'connected' } }, 'and still answers rpc over the broker');
  t.notMatch(d.output(), /fleet bridge handler failed|EventBus error|unhandled/i, 'no handler failed, nothing unhandled');
});
