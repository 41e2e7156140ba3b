import t from 'tap';
import { LineFramer } from '../../src/rpc/framing.js';

const text = (bufs: Buffer[]) => bufs.map((b) => b.toString());

t.test('splits lines across chunks and drops blank lines and CR', async (t) => {
  const f = new LineFramer(100);
  t.same(text(f.push(Buffer.from('{"a":1}\n{"b"')).lines), ['{"a":1}']);
  t.equal(f.buffered, 4);
  t.same(text(f.push(Buffer.from(':2}\r\n\n  \n{"c":3}\n')).lines), ['{"b":2}', '{"c":3}']);
  t.equal(f.buffered, 0);
});

t.test('a line of exactly the cap passes; one byte more overflows', async (t) => {
  const f = new LineFramer(10);
  t.same(text(f.push(Buffer.from('0123456789\n')).lines), ['0123456789']);
  const r = f.push(Buffer.from('0123456789A\n'));
  t.equal(r.overflow, true);
  t.same(r.lines, []);
});

t.test('overflow is detected before the newline arrives (no unbounded buffering)', async (t) => {
  const f = new LineFramer(1024);
  let overflow = false;
  for (let i = 0; i < 10 && !overflow; i++) overflow = f.push(Buffer.alloc(200, 0x61)).overflow;
  t.equal(overflow, true);
  t.ok(f.buffered <= 1024 + 200);
});

t.test('lines before an oversized one are still delivered', async (t) => {
  const f = new LineFramer(8);
  const r = f.push(Buffer.from('{"x":1}\n0123456789\n'));
  t.same(text(r.lines), ['{"x":1}']);
  t.equal(r.overflow, true);
});
