// Seeded generators of malformed and hostile JSON-RPC messages, and an oracle that says which
// replies smd owes for a given byte stream. Used by test/rpc/bad-input.test.ts (basicMessage)
// and scripts/stress/rpc.mjs (hostileMessage, expectedReplies). Everything is deterministic
// for a given seed, so a failure can be reproduced.

/** The small LCG of the original fuzz test: returns rnd() in [0, 1]. */
export function lcg(seed) {
  let s = seed;
  return () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
}

/** mulberry32: a better-spread 32-bit generator for the stress run; rnd() in [0, 1). */
export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const pick = (rnd, xs) => xs[Math.floor(rnd() * xs.length)];
export const int = (rnd, lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));

const BASIC_METHODS = ['system.info', 'system.health', 'operations.get', 'operations.wait', 'operations.list', 'db.describe', 'events.subscribe', 'system.setVersion', 'nope', '', 'rpc.discover'];
const basicValue = (rnd) =>
  pick(rnd, [null, true, -1, 1e308, -0, 2 ** 64, 'x', '', [], {}, [[[[[]]]]], { id: 'x' }, { timeoutMs: -5 }, { topics: ['bogus'] }, { version: 1.5 }, { table: "'; DROP TABLE services; --" }, { state: 7 }, 'ñ\u0000\ud800']);

/**
 * The generator of the original fuzz test (one line, without its newline): wrong types,
 * notifications, small batches, bracket soup, truncated JSON, random bytes, odd ids.
 */
export function basicMessage(rnd) {
  const methods = BASIC_METHODS;
  const values = () => basicValue(rnd);
  switch (Math.floor(rnd() * 8)) {
    case 0: return JSON.stringify({ jsonrpc: '2.0', id: Math.floor(rnd() * 1e6), method: pick(rnd, methods), params: values() });
    case 1: return JSON.stringify({ jsonrpc: pick(rnd, ['1.0', 2, null]), id: 1, method: pick(rnd, methods) });
    case 2: return JSON.stringify({ jsonrpc: '2.0', method: pick(rnd, methods), params: values() }); // notification
    case 3: return JSON.stringify(Array.from({ length: Math.floor(rnd() * 5) }, () => ({ jsonrpc: '2.0', id: 1, method: pick(rnd, methods), params: values() })));
    case 4: return '['.repeat(Math.floor(rnd() * 5000)) + ']'.repeat(Math.floor(rnd() * 5000));
    case 5: return JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'operations.wait', params: { id: 'x', timeoutMs: Math.floor(rnd() * 5) } }).slice(0, Math.floor(rnd() * 60));
    case 6: return Buffer.from(Array.from({ length: 1 + Math.floor(rnd() * 40) }, () => Math.floor(rnd() * 256)).filter((b) => b !== 10)).toString('latin1');
    default: return JSON.stringify({ jsonrpc: '2.0', id: { deep: values() }, method: pick(rnd, methods), params: values() });
  }
}

/** Every method smd registers, plus names that probe prototype lookups and near misses. */
export const METHODS = [
  'alerts.list', 'db.describe', 'db.tables', 'events.subscribe', 'events.unsubscribe', 'layers.get', 'layers.install', 'layers.list', 'layers.prune',
  'layers.remove', 'monitoring.get', 'operations.get', 'operations.list', 'operations.wait', 'rpc.discover', 'services.configure', 'services.get',
  'services.install', 'services.list', 'services.logs', 'services.remove', 'services.restart', 'services.start', 'services.stop', 'system.health',
  'system.info', 'system.setVersion', 'traffic.get', 'users.get', 'users.set',
];
const ODD_METHODS = ['', ' ', 'constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', 'system.', '.info', 'SYSTEM.INFO', 'system.info ', 'system.info\u0000', 'rpc.', 'system/info', '\u202esystem.info', 'system.info'.repeat(50)];
const HOSTILE_PATHS = ['/nonexistent', '/', '/etc/hostname', '/dev/null', '/dev/zero', '/proc/self/status', '/tmp/../etc/passwd', '/' + 'a'.repeat(5000), 'relative/path', '', '/tmp/\u0000x'];
const DIGESTS = ['sha256:' + '0'.repeat(64), 'sha256:' + 'f'.repeat(64), 'sha256:xyz', 'md5:abc', ''];
const TOPICS = ['service', 'operation', 'alert', 'traffic', 'users', 'bogus', '', 'SERVICE'];
const STRINGS = ['', 'x', 'a'.repeat(64), 'a'.repeat(300), '../../etc', '\u0000', '\ud800', 'ñ', '😀', "'; DROP TABLE services; --", '%s%s%n', '${process.exit()}', '__proto__'];

/** A wrongly typed or out-of-range value. */
function wrongValue(rnd) {
  switch (int(rnd, 0, 13)) {
    case 0: return null;
    case 1: return pick(rnd, [true, false]);
    case 2: return pick(rnd, [-1, 0, -0, 1.5, 1e308, -1e308, 2 ** 53, 2 ** 64, Number.MIN_VALUE, 4294967296, -2147483649]);
    case 3: return pick(rnd, STRINGS);
    case 4: return [];
    case 5: return {};
    case 6: return Array.from({ length: int(rnd, 1, 5) }, () => pick(rnd, STRINGS));
    case 7: return { x: 1 };
    case 8: return pick(rnd, HOSTILE_PATHS);
    case 9: return pick(rnd, DIGESTS);
    case 10: return pick(rnd, TOPICS);
    case 11: return { __proto__: null, constructor: { prototype: { polluted: true } } };
    case 12: return int(rnd, 0, 1e9);
    default: return 'x'.repeat(int(rnd, 0, 2000));
  }
}

/** Params that are plausible for the method (often valid, sometimes subtly not). */
function plausibleParams(rnd, method) {
  const maybe = (p) => (rnd() < 0.7 ? p : { ...p, [pick(rnd, ['extra', 'wait', 'id', '__proto__'])]: wrongValue(rnd) });
  switch (method) {
    case 'system.setVersion': return maybe({ version: pick(rnd, [0, 1, 2, 12, 2 ** 31, -1, 1.5]) });
    case 'operations.get': return maybe({ id: pick(rnd, ['x', '', 'op-1', '00000000-0000-0000-0000-000000000000']) });
    case 'operations.wait': return maybe({ id: pick(rnd, ['x', 'op-1']), timeoutMs: int(rnd, 0, 5) });
    case 'operations.list': return maybe({ state: pick(rnd, ['pending', 'running', 'succeeded', 'failed', 'bogus']), limit: pick(rnd, [1, 10, 1000, 1001, 0]) });
    case 'db.describe': return maybe({ table: pick(rnd, ['services', 'layers', 'operations', 'sqlite_master', 'nope', "services; DROP TABLE layers", '"services"']) });
    case 'events.subscribe':
    case 'events.unsubscribe': return maybe({ topics: Array.from({ length: int(rnd, 0, 4) }, () => pick(rnd, TOPICS)) });
    case 'layers.get': return maybe({ digest: pick(rnd, DIGESTS) });
    case 'layers.remove': return maybe({ digest: pick(rnd, DIGESTS), force: rnd() < 0.5 });
    case 'layers.install': return maybe({ image: pick(rnd, HOSTILE_PATHS), wait: rnd() < 0.3 });
    case 'layers.prune': return maybe({ wait: rnd() < 0.5 });
    case 'services.install': return maybe({ image: pick(rnd, HOSTILE_PATHS), id: pick(rnd, STRINGS), version: pick(rnd, [1, -1, 1.5, 2 ** 60]), wait: rnd() < 0.3 });
    case 'services.get': case 'services.start': case 'services.stop': case 'services.restart': return maybe({ id: pick(rnd, STRINGS) });
    case 'services.remove': return maybe({ id: pick(rnd, STRINGS), wait: rnd() < 0.5 });
    case 'services.configure': return maybe({ id: pick(rnd, STRINGS), settings: { ttl: wrongValue(rnd), memoryMax: wrongValue(rnd) } });
    case 'services.logs': return maybe({ id: pick(rnd, STRINGS), lines: pick(rnd, [1, 10_000, 10_001, 0]) });
    case 'users.set': return maybe({ users: Array.from({ length: int(rnd, 0, 3) }, () => pick(rnd, STRINGS)), wait: false });
    case 'alerts.list': return maybe({ since: pick(rnd, [0, -1, Date.now()]) });
    case 'monitoring.get': case 'traffic.get': return maybe({ serviceId: pick(rnd, STRINGS) });
    default: return rnd() < 0.8 ? {} : { [pick(rnd, STRINGS)]: wrongValue(rnd) };
  }
}

/** A raw JSON number text that JavaScript cannot hold exactly (or at all). */
const HUGE_NUMBERS = ['1e400', '-1e400', '1E+999', '123456789012345678901234567890', '-0', '0.0000000000000000000000000000001', '1e-400', '18446744073709551616', '9007199254740993', '-9223372036854775809', '1.7976931348623157e309'];
const hugeNumber = (rnd) => (rnd() < 0.1 ? '9'.repeat(int(rnd, 400, 20000)) : pick(rnd, HUGE_NUMBERS));

/** Nesting of `depth` levels, as arrays or objects, around a leaf. */
function nested(rnd, depth) {
  return rnd() < 0.5 ? '['.repeat(depth) + '1' + ']'.repeat(depth) : '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
}

const INVALID_UTF8 = [
  [0xff], [0xfe], [0xc0, 0x80], [0xc1, 0xbf], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xed, 0xbf, 0xbf], [0xf4, 0x90, 0x80, 0x80], [0xf5, 0x80, 0x80, 0x80],
  [0xc3], [0xe2, 0x82], [0xf0, 0x9f, 0x98], [0x80], [0xbf], [0xf8, 0x88, 0x80, 0x80, 0x80],
];

/** A JSON-ish skeleton with invalid UTF-8 spliced into a string or between tokens. */
function invalidUtf8(rnd) {
  const bad = Buffer.from(pick(rnd, INVALID_UTF8));
  const where = int(rnd, 0, 3);
  const parts = [
    ['{"jsonrpc":"2.0","id":', String(int(rnd, 0, 1e6)), ',"method":"system.', '', 'info"}'],
    ['{"jsonrpc":"2.0","id":"', 'id-', '', '","method":"system.info"}'],
    ['{"jsonrpc":"2.0","id":7,"method":"db.describe","params":{"table":"', '', 'services"}}'],
    ['{"jsonrpc":"2.0","method":"system.info","params":{}}', ''],
  ][where];
  const at = parts.indexOf('');
  return Buffer.concat(parts.map((p, i) => (i === at ? bad : Buffer.from(p, 'utf8'))));
}

/** JSON text of a request, built by hand so raw numbers and duplicate keys survive. */
const req = (fields) => '{' + fields.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',') + '}';

/**
 * One hostile message: a Buffer of one or more complete lines, each ending in "\n".
 * `kind` names the family, for the report. Oversized lines, partial writes and disconnects are
 * produced by the caller (they are about the connection, not the message).
 */
export function hostileMessage(rnd) {
  const r = rnd();
  const id = () => pick(rnd, [String(int(rnd, 0, 1e6)), JSON.stringify('s-' + int(rnd, 0, 1e6)), 'null']);
  const line = (s) => Buffer.from(s + '\n', 'utf8');
  if (r < 0.22) return { kind: 'basic', bytes: Buffer.from(basicMessage(rnd) + '\n', 'utf8') };
  if (r < 0.40) {
    const method = pick(rnd, METHODS);
    const msg = { jsonrpc: '2.0', id: rnd() < 0.5 ? int(rnd, 0, 1e6) : 'q-' + int(rnd, 0, 1e6), method, params: plausibleParams(rnd, method) };
    return { kind: 'plausible', bytes: line(JSON.stringify(msg)) };
  }
  if (r < 0.50) {
    // Wrong types in every position of the envelope.
    const fields = [];
    if (rnd() < 0.9) fields.push(['jsonrpc', JSON.stringify(rnd() < 0.7 ? '2.0' : wrongValue(rnd))]);
    if (rnd() < 0.8) fields.push(['id', JSON.stringify(rnd() < 0.5 ? int(rnd, 0, 1e6) : wrongValue(rnd))]);
    if (rnd() < 0.9) fields.push(['method', JSON.stringify(rnd() < 0.5 ? pick(rnd, METHODS) : wrongValue(rnd))]);
    if (rnd() < 0.7) fields.push(['params', JSON.stringify(wrongValue(rnd))]);
    if (rnd() < 0.1) fields.push([pick(rnd, ['result', 'error', 'extra']), JSON.stringify(wrongValue(rnd))]);
    return { kind: 'wrong-types', bytes: line(req(fields.sort(() => rnd() - 0.5))) };
  }
  if (r < 0.58) {
    const where = int(rnd, 0, 2);
    const fields = [['jsonrpc', '"2.0"'], ['id', where === 0 ? hugeNumber(rnd) : id()], ['method', JSON.stringify(pick(rnd, ['system.setVersion', 'operations.list', 'operations.wait', 'services.logs', 'alerts.list']))]];
    const key = pick(rnd, ['version', 'limit', 'timeoutMs', 'lines', 'since', 'expectedRowVersion']);
    if (where > 0) fields.push(['params', `{${JSON.stringify(key)}:${hugeNumber(rnd)}}`]);
    return { kind: 'huge-numbers', bytes: line(req(fields)) };
  }
  if (r < 0.61) {
    const depth = int(rnd, 100, rnd() < 0.8 ? 5_000 : 60_000);
    const where = int(rnd, 0, 3);
    const body = nested(rnd, depth);
    const text = [
      req([['jsonrpc', '"2.0"'], ['id', id()], ['method', '"system.info"'], ['params', body]]),
      req([['jsonrpc', '"2.0"'], ['id', body], ['method', '"system.info"']]),
      req([['jsonrpc', '"2.0"'], ['id', id()], ['method', '"services.configure"'], ['params', `{"id":"x","settings":{"permissions":${body}}}`]]),
      body,
    ][where];
    return { kind: 'deep-nesting', bytes: line(text) };
  }
  if (r < 0.69) return { kind: 'invalid-utf8', bytes: Buffer.concat([invalidUtf8(rnd), Buffer.from('\n')]) };
  if (r < 0.75) {
    const n = rnd() < 0.05 ? 1001 : int(rnd, 0, 20);
    const members = Array.from({ length: n }, () => {
      const m = int(rnd, 0, 4);
      if (m === 0) return JSON.stringify(wrongValue(rnd));
      if (m === 1) return JSON.stringify({ jsonrpc: '2.0', method: pick(rnd, METHODS), params: {} }); // notification
      const method = pick(rnd, METHODS);
      return JSON.stringify({ jsonrpc: '2.0', id: int(rnd, 0, 1e6), method, params: plausibleParams(rnd, method) });
    });
    return { kind: 'batch', bytes: line('[' + members.join(',') + ']') };
  }
  if (r < 0.83) {
    const ok = JSON.stringify({ jsonrpc: '2.0', id: int(rnd, 0, 1e6), method: 'system.info' });
    const variants = [
      () => Buffer.from(ok + '\r\n'),
      () => Buffer.from('\n\n   \n\t\n'),
      () => Buffer.from('\r\n'),
      () => Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(ok + '\n')]),
      () => Buffer.from(ok + ok + '\n'),
      () => Buffer.from(ok + ' garbage\n'),
      () => Buffer.from('\u0000' + ok + '\n'),
      () => Buffer.from(ok.replace('"id"', '"id":1,"id"') + '\n'),
      () => Buffer.from(ok + '\n' + ok + '\r\n' + ok + '\n'),
      () => Buffer.from('  ' + ok + '  \n'),
      () => Buffer.from(ok.replace('{', '{"jsonrpc":"1.0",') + '\n'),
      () => Buffer.from('null\n'),
      () => Buffer.from('[]\n'),
      () => Buffer.from('[[]]\n'),
      () => Buffer.from('"' + 'x'.repeat(int(rnd, 0, 100)) + '"\n'),
      () => Buffer.from('1e400\n'),
    ];
    return { kind: 'framing', bytes: pick(rnd, variants)() };
  }
  if (r < 0.88) {
    const method = pick(rnd, ODD_METHODS);
    const fields = [['jsonrpc', '"2.0"'], ['id', id()], ['method', JSON.stringify(method)]];
    if (rnd() < 0.5) fields.push(['params', pick(rnd, ['{"__proto__":{"polluted":true}}', '{"constructor":{"prototype":{"polluted":true}}}', '{"__proto__":null}', '{}'])]);
    return { kind: 'prototype', bytes: line(req(fields)) };
  }
  if (r < 0.90) {
    const big = 'x'.repeat(int(rnd, 10_000, 600_000));
    const text = pick(rnd, [
      req([['jsonrpc', '"2.0"'], ['id', id()], ['method', JSON.stringify(big)]]),
      req([['jsonrpc', '"2.0"'], ['id', JSON.stringify(big)], ['method', '"system.info"']]),
      req([['jsonrpc', '"2.0"'], ['id', id()], ['method', '"db.describe"'], ['params', JSON.stringify({ table: big })]]),
      req([['jsonrpc', '"2.0"'], ['id', id()], ['method', '"system.info"'], ['params', JSON.stringify({ [big]: 1 })]]),
    ]);
    return { kind: 'long-strings', bytes: line(text) };
  }
  if (r < 0.93) {
    const text = pick(rnd, [
      '{"jsonrpc":"2.0","id":1,"id":"dup","method":"system.info"}',
      '{"jsonrpc":"2.0","id":1,"method":"nope","method":"system.info"}',
      '{"jsonrpc":"1.0","jsonrpc":"2.0","id":2,"method":"system.info"}',
      '{"jsonrpc":"2.0","id":3,"method":"system.setVersion","params":{"version":1,"version":"x"}}',
      '{"jsonrpc":"2.0","id":4,"method":"system.info","params":{},"params":[]}',
    ]);
    return { kind: 'duplicate-keys', bytes: line(text) };
  }
  // Notifications: valid, invalid params, unknown methods (none owes a reply unless the envelope is bad).
  const method = pick(rnd, [...METHODS, ...ODD_METHODS]);
  const params = rnd() < 0.5 ? plausibleParams(rnd, method) : wrongValue(rnd);
  return { kind: 'notification', bytes: line(JSON.stringify({ jsonrpc: rnd() < 0.9 ? '2.0' : '1.0', method, params })) };
}

/** A burst of notifications (no id): nothing is owed for any of them. */
export function notificationFlood(rnd, n) {
  const lines = [];
  for (let i = 0; i < n; i++) {
    const method = pick(rnd, ['system.info', 'system.health', 'operations.list', 'db.tables', 'nope', 'events.subscribe', 'system.setVersion']);
    const params = method === 'events.subscribe' ? { topics: ['operation'] } : method === 'system.setVersion' ? { version: int(rnd, 0, 3) } : {};
    lines.push(JSON.stringify({ jsonrpc: '2.0', method, params }));
  }
  return Buffer.from(lines.join('\n') + '\n');
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
const validId = (id) => id === null || typeof id === 'string' || (typeof id === 'number' && Number.isFinite(id));
/** How a reply's id is compared: as smd would serialize it. */
export const idKey = (id) => JSON.stringify(id === undefined ? null : id);

function owedFor(message) {
  if (typeof message !== 'object' || message === null || Array.isArray(message)) return 'null';
  const hasId = Object.hasOwn(message, 'id');
  const id = hasId && validId(message.id) ? message.id : null;
  if (message.jsonrpc !== '2.0' || typeof message.method !== 'string' || (hasId && !validId(message.id))) return idKey(id);
  return hasId ? idKey(id) : undefined;
}

/**
 * The oracle: the replies (as id keys, see idKey) a JSON-RPC 2.0 server framing one message per
 * line owes for `bytes`, following SPEC section 7 and smd's documented limits. Independent of
 * what the methods do: a request with an id gets exactly one reply with that id, a notification
 * none, anything unparseable or invalid one reply with id null. `overflow` is true when a line
 * is over `maxRequestBytes` (the server answers with id null and closes the connection).
 */
export function expectedReplies(bytes, { maxBatch = 1000, maxRequestBytes = 1048576 } = {}) {
  const keys = [];
  let start = 0;
  for (let nl = bytes.indexOf(10, start); nl !== -1; nl = bytes.indexOf(10, start)) {
    const raw = bytes.subarray(start, nl);
    start = nl + 1;
    if (raw.length > maxRequestBytes) return { keys: [...keys, 'null'], overflow: true };
    let end = raw.length > 0 && raw[raw.length - 1] === 13 ? raw.length - 1 : raw.length;
    let blank = true;
    for (let i = 0; i < end && blank; i++) if (raw[i] !== 32 && raw[i] !== 9) blank = false;
    if (end === 0 || blank) continue;
    let message;
    try {
      message = JSON.parse(strictUtf8.decode(raw.subarray(0, end)));
    } catch {
      keys.push('null');
      continue;
    }
    if (Array.isArray(message)) {
      if (message.length === 0 || message.length > maxBatch) keys.push('null');
      else for (const m of message) {
        const k = owedFor(m);
        if (k !== undefined) keys.push(k);
      }
      continue;
    }
    const k = owedFor(message);
    if (k !== undefined) keys.push(k);
  }
  if (bytes.length - start > maxRequestBytes) return { keys: [...keys, 'null'], overflow: true };
  return { keys, overflow: false };
}
