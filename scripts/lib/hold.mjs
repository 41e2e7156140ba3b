// The protocol of `scripts/sandbox --hold` and `scripts/device --hold`, in one place for the
// tests (test/helpers/sandbox.ts, test/helpers/device.ts) and the stress scripts: the script
// prints one JSON line describing what it set up, then answers each command written to its
// stdin with one JSON line, and tears everything down when its stdin closes.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

export async function startHold(script, { startTimeoutMs = 30_000, stopTimeoutMs = 15_000, what = 'hold' } = {}) {
  const child = spawn(script, ['--hold'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-8000)));
  const exited = new Promise((res) => child.once('exit', (code) => res(code)));
  const lines = createInterface({ input: child.stdout });
  const replies = [];
  let first = null;
  lines.on('line', (line) => {
    if (first) {
      const f = first;
      first = null;
      f(line);
    } else replies.shift()?.(line);
  });

  let stopped = null;
  const stop = () => {
    stopped ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.stdin.end(); // the script tears down (by PID) when its stdin closes
        const soft = setTimeout(() => child.kill('SIGTERM'), stopTimeoutMs);
        const hard = setTimeout(() => child.kill('SIGKILL'), stopTimeoutMs + 10_000);
        await exited;
        clearTimeout(soft);
        clearTimeout(hard);
      }
    })();
    return stopped;
  };

  const info = await new Promise((res, rej) => {
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      rej(new Error(`${what} did not start within ${startTimeoutMs} ms: ${stderr}`));
    }, startTimeoutMs);
    first = (line) => {
      clearTimeout(timer);
      try {
        res(JSON.parse(line));
      } catch (err) {
        rej(err);
      }
    };
    void exited.then((code) => {
      clearTimeout(timer);
      rej(new Error(`${what} exited with ${code} before it was ready: ${stderr}`));
    });
  });

  /** One command; resolves with its JSON reply (plus `at`, performance.now() on arrival), rejects unless ok. */
  const control = (cmd, timeoutMs = 40_000) =>
    new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`${what}: no answer to ${cmd} within ${timeoutMs} ms`)), timeoutMs);
      replies.push((line) => {
        clearTimeout(timer);
        const r = JSON.parse(line);
        r.at = performance.now();
        if (!r.ok) rej(new Error(`${what}: ${cmd}: ${r.error}`));
        else res(r);
      });
      child.stdin.write(cmd + '\n');
    });

  return { info, control, stop };
}
