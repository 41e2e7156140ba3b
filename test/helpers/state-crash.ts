/**
 * kill -9 of smd as a step of a desired-state apply begins, then a restart: the device is either
 * fully in the old state (a crash before `commit`) or fully in the new one (after it), with every
 * service of that state running, nothing else installed, no leftover layer, and database, units,
 * mounts, directories and accounts agreeing. Used by test/state/crash-*.test.ts (split so that
 * each file stays well inside tap's timeout).
 */
import { join } from 'node:path';
import { buildExampleImages, startDaemon, tempDir } from './daemon.js';
import { checkInvariants } from './invariants.js';
import { startSandbox } from './sandbox.js';

interface Tap {
  teardown(fn: () => unknown): void;
  equal(a: unknown, b: unknown, msg?: string): void;
  not(a: unknown, b: unknown, msg?: string): void;
  same(a: unknown, b: unknown, msg?: string): void;
}

interface Svc {
  id: string;
  version: number;
  live?: { activeState: string } | null;
}

/** Old: hello-http v1, keep v1, old v1. New: hello-http v2 (updated), keep v1, fresh v1 (installed), old removed. */
export const OLD = { 'hello-http': 1, keep: 1, old: 1 };
export const NEW = { 'hello-http': 2, keep: 1, fresh: 1 };

export async function crashSteps(t: Tap, steps: readonly (readonly [string, typeof OLD | typeof NEW])[], opts: { rollback?: boolean } = {}): Promise<void> {
  const sb = await startSandbox(t);
  const dir = tempDir(t);
  const img = buildExampleImages(join(dir, 'images')).byName;
  type Daemon = Awaited<ReturnType<typeof startDaemon>>;
  type Client = Awaited<ReturnType<Daemon['client']>>;
  const image = (id: string, v: number) => (id === 'hello-http' ? img[`hello-http-v${v}`]! : img['writer-v1']!);
  let version = 0;
  const stateOf = (services: Record<string, number>) => ({
    version: ++version,
    services: Object.entries(services).map(([id, v]) => ({ id, version: v, image: image(id, v) })),
    layers: [] as unknown[],
  });

  let current: Daemon = await startDaemon(t, { dir, sandbox: sb });
  let c: Client = await current.client();
  const apply = async (services: Record<string, number>) => {
    const op = await c.call<{ state: string; error: unknown }>('state.apply', { desired: stateOf(services), wait: true });
    t.equal(op.state, 'succeeded', `apply ${JSON.stringify(services)}: ${JSON.stringify(op.error)}`);
  };
  const expectState = async (label: string, want: Record<string, number>) => {
    const list = await c.call<Svc[]>('services.list');
    t.same(Object.fromEntries(list.map((s) => [s.id, s.version])), want, `${label}: the services and versions of one state`);
    for (const id of Object.keys(want)) t.equal((await c.call<Svc>('services.get', { id })).live?.activeState, 'active', `${label}: ${id} runs`);
    for (const l of await c.call<{ digest: string; usedBy: string[] }[]>('layers.list')) t.not(l.usedBy.length, 0, `${label}: layer ${l.digest.slice(0, 19)} is used`);
    t.same(await checkInvariants({ dbPath: join(dir, 'data/smd.db'), dataDir: join(dir, 'data'), runDir: join(dir, 'run'), sandbox: sb }), [], `${label}: invariants hold`);
  };
  const crash = async (step: string, desired: unknown) => {
    await current.stop();
    const doomed = await startDaemon(t, { dir, sandbox: sb, env: { SMD_CRASH_AT: `state.apply:${step}` } });
    const dc = await doomed.client();
    await dc.call('state.apply', { desired, wait: true }).catch(() => {});
    t.equal(await doomed.exited, null, `${step}: smd was killed`);
    t.equal(doomed.proc.signalCode, 'SIGKILL');
    current = await startDaemon(t, { dir, sandbox: sb });
    c = await current.client();
  };

  await apply(OLD);
  await expectState('start', OLD);
  for (const [step, want] of steps) {
    await crash(step, stateOf(NEW));
    await expectState(`crash at ${step}`, want);
    const st = await c.call<{ applied: { state: string } }>('state.get');
    t.equal(st.applied.state, want === NEW ? 'succeeded' : 'failed', `${step}: the stored apply says how it ended`);
    if (want === NEW) {
      await apply(OLD);
      await expectState(`back from ${step}`, OLD);
    }
  }
  if (opts.rollback) {
    // A crash while a failed apply puts things back: the restart finishes putting them back.
    const failing = stateOf({ 'hello-http': 2, keep: 1, old: 1 });
    failing.services.push({ id: 'bad', version: 1, image: img['failing-v1']! });
    await crash('rollback', failing);
    await expectState('crash at rollback', OLD);
  }
  await current.stop();
}
