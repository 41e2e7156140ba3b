import t from 'tap';
import { z } from 'zod';
import { Dispatcher } from '../../src/rpc/dispatcher.js';
import { MethodRegistry, defineMethod, noParams } from '../../src/rpc/registry.js';
import { SmError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';

function setup() {
  const registry = new MethodRegistry();
  const calls: unknown[] = [];
  registry.add(
    defineMethod({ name: 'echo', summary: 'echo', params: z.strictObject({ text: z.string(), n: z.number().int().optional() }), mutating: false, handler: (p) => p }),
    defineMethod({ name: 'write', summary: 'mutates', params: noParams, mutating: true, handler: () => (calls.push('write'), 'written') }),
    defineMethod({ name: 'missing', summary: 'fails', params: noParams, mutating: false, handler: () => { throw new SmError('NOT_FOUND', 'service x not found', { id: 'x' }); } }),
    defineMethod({ name: 'crash', summary: 'bug', params: noParams, mutating: false, handler: () => { throw new TypeError('oops'); } }),
    defineMethod({ name: 'nothing', summary: 'returns undefined', params: noParams, mutating: false, handler: () => undefined }),
  );
  const d = new Dispatcher(registry, silentLogger, { maxBatch: 5 });
  const send = (v: unknown, readOnly = false) => d.handle(Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)), { readOnly });
  return { d, send, calls, registry };
}

t.test('a valid call returns its result with the same id', async (t) => {
  const { send } = setup();
  t.same(await send({ jsonrpc: '2.0', id: 7, method: 'echo', params: { text: 'hi' } }), { jsonrpc: '2.0', id: 7, result: { text: 'hi' } });
  t.same(await send({ jsonrpc: '2.0', id: 'a', method: 'nothing' }), { jsonrpc: '2.0', id: 'a', result: null });
});

t.test('protocol errors get the standard codes', async (t) => {
  const { send } = setup();
  t.match(await send('{"jsonrpc":'), { id: null, error: { code: -32700 } });
  t.match(await send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]).toString('latin1')), { error: { code: -32700 } });
  const invalidUtf8 = await new Dispatcher(new MethodRegistry(), silentLogger, { maxBatch: 5 }).handle(Buffer.from([0x22, 0xc3, 0x28, 0x22]), { readOnly: false });
  t.match(invalidUtf8, { error: { code: -32700, message: /UTF-8/ } });
  t.match(await send('42'), { id: null, error: { code: -32600 } });
  t.match(await send('null'), { id: null, error: { code: -32600 } });
  t.match(await send({ id: 1, method: 'echo' }), { id: 1, error: { code: -32600 } });
  t.match(await send({ jsonrpc: '2.0', id: { x: 1 }, method: 'echo' }), { id: null, error: { code: -32600 } });
  t.match(await send({ jsonrpc: '2.0', id: 2, method: 'nope' }), { id: 2, error: { code: -32601, message: /nope/ } });
});

t.test('invalid params name the offending path', async (t) => {
  const { send } = setup();
  const wrongType = await send({ jsonrpc: '2.0', id: 1, method: 'echo', params: { text: 5 } });
  t.match(wrongType, { error: { code: -32602, data: { issues: [{ path: 'text' }] } } });
  const extra = await send({ jsonrpc: '2.0', id: 1, method: 'echo', params: { text: 'a', evil: true } });
  t.match(extra, { error: { code: -32602, data: { issues: [{ path: 'evil' }] } } });
  const huge = await send({ jsonrpc: '2.0', id: 1, method: 'echo', params: { text: 'a', n: 1e300 } });
  t.match(huge, { error: { code: -32602, data: { issues: [{ path: 'n' }] } } });
  const positional = await send({ jsonrpc: '2.0', id: 1, method: 'echo', params: ['a'] });
  t.match(positional, { error: { code: -32602 } });
  const missing = await send({ jsonrpc: '2.0', id: 1, method: 'echo' });
  t.match(missing, { error: { code: -32602, data: { issues: [{ path: 'text' }] } } });
});

t.test('application errors carry data.code; unexpected errors become INTERNAL', async (t) => {
  const { send } = setup();
  t.same(await send({ jsonrpc: '2.0', id: 1, method: 'missing' }), {
    jsonrpc: '2.0',
    id: 1,
    error: { code: -32000, message: 'service x not found', data: { code: 'NOT_FOUND', details: { id: 'x' } } },
  });
  t.match(await send({ jsonrpc: '2.0', id: 1, method: 'crash' }), { error: { code: -32000, data: { code: 'INTERNAL' }, message: /oops/ } });
});

t.test('mutating methods are FORBIDDEN on the read-only socket and not executed', async (t) => {
  const { send, calls } = setup();
  t.match(await send({ jsonrpc: '2.0', id: 1, method: 'write' }, true), { error: { code: -32000, data: { code: 'FORBIDDEN' } } });
  t.same(calls, []);
  t.match(await send({ jsonrpc: '2.0', id: 1, method: 'echo', params: { text: 'ok' } }, true), { result: { text: 'ok' } });
  t.match(await send({ jsonrpc: '2.0', id: 1, method: 'write' }, false), { result: 'written' });
});

t.test('notifications get no reply, even when they fail', async (t) => {
  const { send, calls } = setup();
  t.equal(await send({ jsonrpc: '2.0', method: 'write' }), null);
  t.equal(await send({ jsonrpc: '2.0', method: 'missing' }), null);
  t.equal(await send({ jsonrpc: '2.0', method: 'nope' }), null);
  t.same(calls, ['write']);
});

t.test('batches: one reply array, notifications omitted, limits enforced', async (t) => {
  const { send } = setup();
  const reply = await send([
    { jsonrpc: '2.0', id: 1, method: 'echo', params: { text: 'a' } },
    { jsonrpc: '2.0', method: 'write' },
    null,
    { jsonrpc: '2.0', id: 2, method: 'nope' },
  ]);
  t.ok(Array.isArray(reply));
  t.match(reply, [{ id: 1, result: { text: 'a' } }, { id: null, error: { code: -32600 } }, { id: 2, error: { code: -32601 } }]);
  const single = await send([{ jsonrpc: '2.0', id: 9, method: 'nothing' }]);
  t.ok(Array.isArray(single), 'a batch of one is still answered with an array');
  t.equal(await send([{ jsonrpc: '2.0', method: 'write' }]), null, 'a batch of notifications gets nothing');
  t.match(await send([]), { error: { code: -32600 } });
  t.match(await send(Array.from({ length: 6 }, (_, i) => ({ jsonrpc: '2.0', id: i, method: 'nothing' }))), { error: { code: -32600, message: /limit of 5/ } });
});

t.test('rpc.discover document lists params from the schemas', async (t) => {
  const { registry } = setup();
  const doc = registry.openrpc({ title: 'smd', version: '0' }) as { methods: { name: string; params: { name: string; required: boolean; schema: { type?: string } }[]; 'x-mutating': boolean }[] };
  const echo = doc.methods.find((m) => m.name === 'echo')!;
  t.same(
    echo.params.map((p) => [p.name, p.required, p.schema.type]),
    [
      ['text', true, 'string'],
      ['n', false, 'integer'],
    ],
  );
  t.equal(doc.methods.find((m) => m.name === 'write')!['x-mutating'], true);
});
