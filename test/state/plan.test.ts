/** Pure logic of the desired state: the plan per service, the version rule, the content hash, the drift. */
import t from 'tap';
import { checkVersion, computeDrift, contentHash, desiredStateSchema, planServices } from '../../src/state/plan.js';

t.test('plan: install the missing, update another version (also a lower one), keep the same, remove the unlisted last', async (t) => {
  const plan = planServices(
    [
      { id: 'web', version: 2 },
      { id: 'new', version: 1 },
      { id: 'same', version: 3 },
      { id: 'down', version: 1 },
    ],
    [
      { id: 'zeta', version: 1 },
      { id: 'web', version: 1 },
      { id: 'same', version: 3 },
      { id: 'down', version: 2 },
      { id: 'alpha', version: 5 },
    ],
  );
  t.same(plan, [
    { id: 'web', action: 'update', from: 1, to: 2 },
    { id: 'new', action: 'install', from: null, to: 1 },
    { id: 'same', action: 'unchanged', from: 3, to: 3 },
    { id: 'down', action: 'update', from: 2, to: 1 },
    { id: 'alpha', action: 'remove', from: 5, to: null },
    { id: 'zeta', action: 'remove', from: 1, to: null },
  ]);
  t.same(planServices([], []), []);
});

t.test('version rule', async (t) => {
  const last = { version: 5, hash: 'h5' };
  t.equal(checkVersion(null, 1, 'x', false), 'apply', 'nothing applied yet');
  t.equal(checkVersion(last, 6, 'h6', false), 'apply');
  t.equal(checkVersion(last, 5, 'h5', false), 'unchanged', 'same version, same content');
  t.equal(checkVersion(last, 5, 'h5', true), 'apply', 'force re-applies (repairs drift)');
  t.throws(() => checkVersion(last, 4, 'h4', false), { code: 'CONFLICT', details: { applied: 5, requested: 4 } });
  t.equal(checkVersion(last, 4, 'h4', true), 'apply');
  t.throws(() => checkVersion(last, 5, 'other', false), { code: 'CONFLICT', message: /other content/ });
  t.equal(checkVersion(last, 5, 'other', true), 'apply');
});

t.test('content hash ignores key order and absent keys, not values', async (t) => {
  const a = desiredStateSchema.parse({ version: 1, services: [{ id: 'a', version: 1, image: '/x.tar', settings: { ttl: 1, hostname: 'h' } }] });
  const b = desiredStateSchema.parse({ layers: [], services: [{ settings: { hostname: 'h', ttl: 1 }, image: '/x.tar', version: 1, id: 'a' }], version: 1 });
  t.equal(contentHash(a), contentHash(b));
  const c = desiredStateSchema.parse({ version: 1, services: [{ id: 'a', version: 1, image: '/y.tar' }] });
  t.not(contentHash(a), contentHash(c));
  t.match(contentHash(a), /^sha256:[a-f0-9]{64}$/);
});

t.test('schema: duplicate ids, relative paths and unknown keys are refused', async (t) => {
  t.notOk(desiredStateSchema.safeParse({ version: 1, services: [{ id: 'a', version: 1, image: '/x' }, { id: 'a', version: 2, image: '/y' }] }).success);
  t.notOk(desiredStateSchema.safeParse({ version: 1, services: [{ id: 'a', version: 1, image: 'x.tar' }] }).success);
  t.notOk(desiredStateSchema.safeParse({ version: 1, services: [], extra: 1 }).success);
  t.notOk(desiredStateSchema.safeParse({ version: -1, services: [] }).success);
  t.same(desiredStateSchema.parse({ version: 1, services: [] }).layers, [], 'layers default to none');
});

t.test('drift', async (t) => {
  const desired = { services: [{ id: 'gone', version: 1 }, { id: 'old', version: 3 }, { id: 'stopped', version: 1 }, { id: 'other-users', version: 1 }, { id: 'fine', version: 1 }] } as Parameters<typeof computeDrift>[0];
  const drift = computeDrift(
    desired,
    [
      { id: 'old', version: 2, state: 1, attached: true },
      { id: 'stopped', version: 1, state: 2, attached: true },
      { id: 'other-users', version: 1, state: 0, attached: false },
      { id: 'fine', version: 1, state: 1, attached: true },
      { id: 'extra', version: 7, state: 1, attached: true },
    ],
    { digests: ['sha256:aa', 'sha256:bb'], has: (d) => d === 'sha256:aa' },
  );
  t.same(drift, [
    { kind: 'service', id: 'gone', issue: 'missing', expected: 1, actual: null },
    { kind: 'service', id: 'old', issue: 'version', expected: 3, actual: 2 },
    { kind: 'service', id: 'stopped', issue: 'notRunning', expected: 'running', actual: 'failed' },
    { kind: 'service', id: 'extra', issue: 'unexpected', expected: null, actual: 7 },
    { kind: 'layer', id: 'sha256:bb', issue: 'layerMissing', expected: 'stored', actual: null },
  ]);
  t.same(computeDrift(null, [{ id: 'x', version: 1, state: 1, attached: true }]), [], 'no desired state: no drift');
});
