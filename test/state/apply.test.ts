/**
 * state.apply on the real stack: a fresh desired state, the same again (no-op), a failing
 * health gate (everything put back), a missing image (nothing changed), the version rule,
 * removals last, too little disk (LIMIT, nothing fetched), and smctl apply / state.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SMCTL, startDaemon } from '../helpers/daemon.js';
import { STATE, servicesFixture, type Op, type Svc } from '../helpers/services-fixture.js';

interface Item {
  kind: string;
  id: string;
  outcome: string;
  from?: number | null;
  to?: number;
  error?: string;
}
type ApplyOp = Op & { result: { items: Item[]; unchanged?: boolean } | null; error: (Op['error'] & { details?: { items?: Item[] } }) | null; steps?: { name: string }[] };
interface StateView {
  desired: { version: number } | null;
  applied: { version: number; operationId: string; state: string; finishedAt: number | null } | null;
  lastSucceeded: { version: number } | null;
  drift: { kind: string; id: string; issue: string }[];
}

const outcomes = (items: Item[] | undefined) => Object.fromEntries((items ?? []).map((i) => [i.id, i.outcome]));

t.test('desired state: apply, no-op, rollback, nothing changed, version rule, removals, LIMIT', async (t) => {
  const { sb, d, c, img, fetchPage } = await servicesFixture(t);
  const apply = (desired: unknown, extra: Record<string, unknown> = {}) => c.call<ApplyOp>('state.apply', { desired, wait: true, ...extra });
  const withSteps = async (op: ApplyOp) => c.call<ApplyOp & { steps: { name: string; state: string }[] }>('operations.get', { id: op.id });
  const services = async () => Object.fromEntries((await c.call<Svc[]>('services.list')).map((s) => [s.id, s]));
  const live = async (id: string) => (await c.call<Svc>('services.get', { id })).live?.activeState;
  const layerDigests = async () => (await c.call<{ digest: string }[]>('layers.list')).map((l) => l.digest).sort();

  const v1 = {
    version: 1,
    services: [
      { id: 'hello-http', version: 1, image: img['hello-http-v1']! },
      { id: 'ticker', version: 1, image: img['writer-v1']! },
      { id: 'third', version: 1, image: img['writer-v1']!, settings: { ttl: 7 } },
    ],
    layers: [{ image: img['layer-base-vnull']! }],
  };

  // (a) three services fresh: all installed and running.
  const first = await apply(v1);
  t.equal(first.state, 'succeeded', JSON.stringify(first.error));
  t.same(outcomes(first.result?.items), { [img['layer-base-vnull']!]: 'installed', 'hello-http': 'installed', ticker: 'installed', third: 'installed' });
  for (const id of ['hello-http', 'ticker', 'third']) t.equal(await live(id), 'active', `${id} runs`);
  const svc1 = await services();
  t.match(svc1, { 'hello-http': { version: 1, state: STATE.running }, ticker: { version: 1 }, third: { version: 1, settings: { ttl: 7 } } });
  t.match(await fetchPage(), /version 1</);
  const layersAfterV1 = await layerDigests();
  t.match(await c.call<StateView>('state.get'), { desired: { version: 1 }, applied: { version: 1, operationId: first.id, state: 'succeeded' }, lastSucceeded: null, drift: [] });

  // ... and again: a no-op that touches no service.
  const again = await apply(v1);
  t.equal(again.state, 'succeeded');
  t.equal(again.result?.unchanged, true);
  t.ok(again.result?.items.every((i) => i.outcome === 'unchanged'), 'every item unchanged');
  t.same((await withSteps(again)).steps, [], 'no steps at all');
  t.same(Object.values(await services()).map((s) => s.rowVersion), Object.values(svc1).map((s) => s.rowVersion), 'no service row changed');

  // (b) the third's update fails its health gate: the first two go back to version 1, running.
  const v2 = {
    version: 2,
    services: [
      { id: 'hello-http', version: 2, image: img['hello-http-v2']! },
      { id: 'ticker', version: 2, image: img['writer-v2']! },
      { id: 'third', version: 2, image: img['failing-v1']! },
    ],
    layers: [{ image: img['layer-base-vnull']! }],
  };
  const failed = await apply(v2);
  t.equal(failed.state, 'failed');
  t.match(failed.error?.message, /third version 2/, 'the error names the item');
  t.match(failed.error?.message, /2 changed services were put back/);
  t.match(outcomes(failed.error?.details?.items), { 'hello-http': 'rolledBack', ticker: 'rolledBack', third: 'failed' });
  t.match(await services(), { 'hello-http': { version: 1, state: STATE.running }, ticker: { version: 1, state: STATE.running }, third: { version: 1, state: STATE.running } });
  for (const id of ['hello-http', 'ticker', 'third']) t.equal(await live(id), 'active', `${id} runs again`);
  t.match(await fetchPage(), /version 1</);
  t.same(await layerDigests(), layersAfterV1, 'no layer of the failed apply is left');
  const steps = (await withSteps(failed)).steps.map((s) => s.name);
  t.ok(steps.indexOf('rollback') > steps.indexOf('third-start'), 'the rollback followed the failed start');
  t.notOk(steps.includes('commit'), 'never committed');
  t.match(await c.call<StateView>('state.get'), { desired: { version: 2 }, applied: { version: 2, state: 'failed' }, lastSucceeded: { version: 1 } });
  t.ok((await c.call<StateView>('state.get')).drift.some((x) => x.id === 'hello-http' && x.issue === 'version'), 'drift against the asked state shows the difference');

  // (c) one image is missing: nothing changes at all.
  const before = await services();
  const missing = await apply({ ...v2, version: 3, services: [{ id: 'hello-http', version: 2, image: img['hello-http-v2']! }, { id: 'ticker', version: 2, image: '/nonexistent/writer.tar' }] });
  t.equal(missing.state, 'failed');
  t.match(missing.error?.message, /ticker/);
  t.match(outcomes(missing.error?.details?.items), { ticker: 'failed', 'hello-http': 'unchanged', third: 'unchanged' });
  t.same(await services(), before, 'every service row as it was');
  t.same(
    (await withSteps(missing)).steps.map((s) => s.name),
    ['resolve'],
    'it stopped while resolving',
  );

  // (d) a lower version is CONFLICT; with force it is applied.
  await t.rejects(apply({ ...v1, version: 0 }), { code: 'CONFLICT' });
  await t.rejects(apply({ ...v1, services: v1.services.slice(0, 2) }), { code: 'CONFLICT', message: /other content/ }, 'the same version with other content');
  const forced = await apply({ ...v1, version: 0 }, { force: true });
  t.equal(forced.state, 'succeeded', JSON.stringify(forced.error));
  t.match(outcomes(forced.result?.items), { 'hello-http': 'unchanged', ticker: 'unchanged', third: 'unchanged' });
  t.match(await c.call<StateView>('state.get'), { applied: { version: 0, state: 'succeeded' } });

  // (e) a service absent from the desired state is removed, after every update held.
  const v5 = { version: 5, services: [{ id: 'hello-http', version: 2, image: img['hello-http-v2']! }, { id: 'ticker', version: 1, image: img['writer-v1']! }], layers: [] };
  const removing = await apply(v5);
  t.equal(removing.state, 'succeeded', JSON.stringify(removing.error));
  t.same(outcomes(removing.result?.items), { 'hello-http': 'updated', ticker: 'unchanged', third: 'removed' });
  const rsteps = (await withSteps(removing)).steps.map((s) => s.name);
  t.ok(rsteps.indexOf('remove') > rsteps.indexOf('commit') && rsteps.indexOf('commit') > rsteps.indexOf('hello-http-start'), `removal last: ${rsteps.join(' ')}`);
  await t.rejects(c.call('services.get', { id: 'third' }), { code: 'NOT_FOUND' });
  t.match(await services(), { 'hello-http': { version: 2, state: STATE.running }, ticker: { version: 1, state: STATE.running } });
  t.match(await fetchPage(), /version 2</);
  for (const l of await c.call<{ digest: string; usedBy: string[] }[]>('layers.list')) t.not(l.usedBy.length, 0, `layer ${l.digest} is used`);

  // Drift: a service stopped and one removed by hand.
  await c.call('services.stop', { id: 'ticker' });
  t.match((await c.call<StateView>('state.get')).drift, [{ id: 'ticker', issue: 'notRunning' }]);
  t.equal((await c.call<{ state: string }>('services.remove', { id: 'ticker', wait: true })).state, 'succeeded');
  t.match((await c.call<StateView>('state.get')).drift, [{ id: 'ticker', issue: 'missing' }]);
  t.equal((await apply(v5)).result?.unchanged, true, 'the same state again is a no-op even with drift');

  // smctl: apply FILE with force repairs the drift; state prints it.
  const file = join(d.dir, 'desired.json');
  writeFileSync(file, JSON.stringify(v5));
  const run = (args: string[]) => promisify(execFile)(process.execPath, [SMCTL, '--socket', d.socket, ...args], { encoding: 'utf8' }).catch((e: { stdout: string; stderr: string; code: number }) => e);
  const human = await run(['apply', file, '--force']);
  t.match(human.stdout, /state\.apply succeeded/);
  t.match(human.stdout, /ticker\s+installed/);
  t.equal(await live('ticker'), 'active');
  const json = JSON.parse((await run(['--json', 'state'])).stdout) as StateView;
  t.match(json, { applied: { version: 5, state: 'succeeded' }, drift: [] });
  t.match((await run(['state'])).stdout, /desired version 5: succeeded[\s\S]*no drift/);
  const lower = await run(['apply', file.replace('desired', 'lower')]);
  t.match(lower.stderr, /cannot read/, 'a missing file is an error');

  // (g) too little disk: LIMIT and nothing fetched or changed (smd restarted with a huge reserve).
  await d.stop();
  const d2 = await startDaemon(t, { dir: d.dir, sandbox: sb, config: { images: { reserveBytes: 1e15 } } });
  const c2 = await d2.client();
  const before2 = await c2.call<Svc[]>('services.list');
  const beforeLayers = await c2.call<{ digest: string }[]>('layers.list');
  const limited = await c2.call<ApplyOp>('state.apply', { desired: { version: 6, services: [...v5.services, { id: 'extra', version: 2, image: img['failing-v2']! }], layers: [] }, wait: true });
  t.equal(limited.state, 'failed');
  t.equal(limited.error?.code, 'LIMIT');
  t.match(limited.error?.message, /nothing was changed/);
  t.same((await c2.call<{ steps: { name: string }[] }>('operations.get', { id: limited.id })).steps.map((s) => s.name), ['resolve'], 'no fetch began');
  t.same(await c2.call<Svc[]>('services.list'), before2);
  t.same(await c2.call<{ digest: string }[]>('layers.list'), beforeLayers);
});
