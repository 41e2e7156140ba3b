import t from 'tap';
import { SmError, toSmError, isSmError } from '../src/errors.js';

t.test('toSmError keeps codes and wraps foreign errors as INTERNAL', async (t) => {
  const own = new SmError('CONFLICT', 'stale', { expected: 1 });
  t.equal(toSmError(own), own);
  const wrapped = toSmError(new TypeError('boom'));
  t.equal(wrapped.code, 'INTERNAL');
  t.equal(wrapped.message, 'boom');
  t.ok(isSmError(wrapped, 'INTERNAL'));
  t.notOk(isSmError(wrapped, 'CONFLICT'));
  t.equal(toSmError('text', 'SYSTEMD').code, 'SYSTEMD');
  const full = Object.assign(new Error('write failed'), { code: 'ENOSPC' });
  t.equal(toSmError(full).code, 'LIMIT', 'a full disk is LIMIT');
  t.equal(toSmError(Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' })).code, 'LIMIT');
});
