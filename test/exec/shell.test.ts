import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ShellSession } from '../../src/exec/shell.js';
import { SmError } from '../../src/errors.js';

t.test('runs programs with exact output, in call order', async (t) => {
  const sh = new ShellSession();
  t.teardown(() => sh.close());
  t.same(await sh.run('printf', ['%s', 'no newline']), { stdout: 'no newline', stderr: '' });
  t.same(await sh.run('printf', ['a\nb\n\n']), { stdout: 'a\nb\n\n', stderr: '' });
  const all = await Promise.all([1, 2, 3, 4, 5].map((i) => sh.run('printf', [`${i}`])));
  t.same(all.map((r) => r.stdout), ['1', '2', '3', '4', '5']);
  const big = await sh.run('head', ['-c', String(3 << 20), '/dev/zero']);
  t.equal(big.stdout.length, 3 << 20, '3 MiB of output arrive whole');
  const err = await sh.run('sh', ['-c', 'echo to-err >&2; echo to-out']);
  t.same(err, { stdout: 'to-out\n', stderr: 'to-err' });
});

t.test('arguments reach the program literally', async (t) => {
  const sh = new ShellSession();
  t.teardown(() => sh.close());
  const hostile = ["it's", '$(touch /tmp/smd-pwned)', '`id`', 'a b', 'line\nbreak', '"q"', ';', '*', '\\', ''];
  const { stdout } = await sh.run('printf', ['%s|', ...hostile]);
  t.equal(stdout, hostile.map((a) => `${a}|`).join(''));
});

t.test('failures are SmErrors like run()', async (t) => {
  const sh = new ShellSession();
  t.teardown(() => sh.close());
  const failed = await sh.run('sh', ['-c', 'echo bad thing >&2; exit 3'], { errorCode: 'UNAVAILABLE' }).catch((e: unknown) => e);
  t.ok(failed instanceof SmError);
  t.equal((failed as SmError).code, 'UNAVAILABLE');
  t.match((failed as SmError).message, /sh failed: bad thing/);
  t.equal((failed as SmError & { details: { exitCode: number } }).details.exitCode, 3);
  const missing = await sh.run('smd-no-such-program', []).catch((e: unknown) => e);
  t.equal((missing as SmError).code, 'UNAVAILABLE');
  t.match((missing as SmError).message, /program not found/);
  t.same(await sh.run('printf', ['still serving']), { stdout: 'still serving', stderr: '' });
});

t.test('a timeout kills the program and the next call gets a fresh shell', async (t) => {
  const sh = new ShellSession();
  t.teardown(() => sh.close());
  const pidFile = join(t.testdir(), 'pid');
  const started = Date.now();
  const err = await sh.run('sh', ['-c', `echo $$ > ${pidFile}; exec sleep 30`], { timeoutMs: 300 }).catch((e: unknown) => e);
  t.match((err as SmError).message, /timed out after 300 ms/);
  t.ok(Date.now() - started < 5_000);
  const pid = Number(readFileSync(pidFile, 'utf8'));
  // The kill is SIGKILL to the whole group: wait for the kernel to reap it (bounded).
  const gone = async () => {
    for (let i = 0; i < 100; i++) {
      try {
        process.kill(pid, 0);
      } catch {
        return true;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return false;
  };
  t.ok(await gone(), 'the program is gone');
  t.same(await sh.run('printf', ['after']), { stdout: 'after', stderr: '' });
});

t.test('after close(), calls still work (through run())', async (t) => {
  const sh = new ShellSession();
  await sh.run('true', []);
  sh.close();
  t.same(await sh.run('printf', ['x']), { stdout: 'x', stderr: '' });
});
