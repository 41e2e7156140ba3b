/**
 * kill -9 of smd at the start of each step of install, update and remove, then a restart:
 * the database is intact and every service is fully installed (or its previous version) or
 * absent, with units, mounts, directories, accounts and layers agreeing.
 */
import t from 'tap';
import { join } from 'node:path';
import { buildExampleImages, startDaemon, tempDir } from '../helpers/daemon.js';
import { checkInvariants } from '../helpers/invariants.js';
import { startSandbox } from '../helpers/sandbox.js';

interface Svc {
  id: string;
  version: number;
  state: number;
  live?: { activeState: string } | null;
}

t.test('crash points during install, update and remove', async (t) => {
  const sb = await startSandbox(t);
  const dir = tempDir(t);
  const built = buildExampleImages(join(dir, 'images')).byName;
  const image = (name: string, v: number) => built[`${name}-v${v}`]!;
  const check = async (label: string) => {
    const problems = await checkInvariants({ dbPath: join(dir, 'data/smd.db'), dataDir: join(dir, 'data'), runDir: join(dir, 'run'), sandbox: sb });
    t.same(problems, [], `${label}: invariants hold`);
  };

  type Client = Awaited<ReturnType<Awaited<ReturnType<typeof startDaemon>>['client']>>;
  let restarted: Awaited<ReturnType<typeof startDaemon>> | null = null;
  /** Runs `action` with smd set to die at `point`, then restarts smd normally and returns a client. */
  const crashAt = async (point: string, action: (c: Client) => Promise<unknown>): Promise<Client> => {
    await restarted?.stop();
    const doomed = await startDaemon(t, { dir, sandbox: sb, env: { SMD_CRASH_AT: point } });
    const c = await doomed.client();
    await action(c).catch(() => {});
    const code = await doomed.exited;
    t.equal(code, null, `${point}: smd was killed`);
    t.equal(doomed.proc.signalCode, 'SIGKILL');
    restarted = await startDaemon(t, { dir, sandbox: sb });
    return restarted.client();
  };

  for (const step of ['layers', 'prepare', 'start']) {
    const c = await crashAt(`services.install:${step}`, (c) => c.call('services.install', { image: image('hello-http', 1), wait: true }));
    await t.rejects(c.call('services.get', { id: 'hello-http' }), { code: 'NOT_FOUND' }, `install crashed at ${step}: rolled back`);
    const failed = await c.call<{ state: string; error: { message: string } }[]>('operations.list', { state: 'failed' });
    t.match(failed[0], { state: 'failed', error: { message: /interrupted/ } });
    await check(`install:${step}`);
    c.close();
  }

  {
    await restarted!.stop();
    const d = await startDaemon(t, { dir, sandbox: sb });
    const c = await d.client();
    t.equal((await c.call<{ state: string }>('services.install', { image: image('hello-http', 1), wait: true })).state, 'succeeded');
    await d.stop();
  }
  for (const step of ['resolve', 'fetch', 'stop-previous', 'layers', 'start', 'cleanup']) {
    const c = await crashAt(`services.install:${step}`, (c) => c.call('services.install', { image: image('hello-http', 2), wait: true }));
    const svc = await c.call<Svc>('services.get', { id: 'hello-http' });
    // An update that was not acknowledged is rolled back, whatever step it reached.
    t.equal(svc.version, 1, `update crashed at ${step}: the previous version is back`);
    t.equal(svc.live?.activeState, 'active', `update crashed at ${step}: the service runs`);
    await check(`update:${step}`);
    c.close();
  }

  for (const step of ['remove', 'prune-layers']) {
    const c = await crashAt(`services.remove:${step}`, (c) => c.call('services.remove', { id: 'hello-http', wait: true }));
    await t.rejects(c.call('services.get', { id: 'hello-http' }), { code: 'NOT_FOUND' }, `remove crashed at ${step}: the restart finished it`);
    await check(`remove:${step}`);
    if (step === 'remove') t.equal((await c.call<{ state: string }>('services.install', { image: image('hello-http', 1), wait: true })).state, 'succeeded');
    c.close();
  }
  await (restarted as Awaited<ReturnType<typeof startDaemon>> | null)?.stop();
});
