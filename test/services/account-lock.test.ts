/**
 * A stale /etc/passwd.lock held by a live process (a useradd of a killed smd) is waited for,
 * not an install failure (issue 13 fault 13). Real useradd in the sandbox's private /etc.
 */
import t from 'tap';
import { join } from 'node:path';
import { buildExampleImages, startDaemon, tempDir } from '../helpers/daemon.js';
import { startSandbox } from '../helpers/sandbox.js';

t.test('install waits for a transient passwd lock held by another process', async (t) => {
  const sb = await startSandbox(t);
  const dir = tempDir(t);
  const writer = buildExampleImages(join(dir, 'images'), ['--version', '1']).byName['writer-v1']!;
  const d = await startDaemon(t, { dir, sandbox: sb });
  const c = await d.client();
  // The holder lives for 2 s; shadow's tools then see its PID dead and take the lock over.
  const holder = sb.spawnInside('sleep', ['2'], { stdio: 'ignore' });
  t.teardown(() => holder.kill('SIGKILL'));
  const exited = new Promise((r) => holder.once('exit', r));
  await sb.run('sh', ['-c', `printf %s ${holder.pid} > /etc/passwd.lock`]);
  const started = Date.now();
  const op = await c.call<{ state: string; error: { code: string; message: string } | null }>('services.install', { image: writer, wait: true });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  t.ok(Date.now() - started >= 1_000, 'the install waited for the lock');
  await exited;
  t.match(await sb.run('getent', ['passwd', 'smd-5000']), /^smd-5000:/);
});
