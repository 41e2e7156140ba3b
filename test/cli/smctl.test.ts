import t from 'tap';
import { spawn } from 'node:child_process';
import { SMCTL, startDaemon } from '../helpers/daemon.js';

function smctl(socket: string, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [SMCTL, '--socket', socket, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

t.test('smctl: human output, --json, and exit codes', async (t) => {
  const d = await startDaemon(t);
  const info = await smctl(d.socket, 'info');
  t.equal(info.code, 0);
  t.match(info.stdout, /^name:\s+smd$/m);
  t.match(info.stdout, /^dbSchemaVersion:\s+\d+$/m);

  const json = await smctl(d.socket, '--json', 'info');
  t.equal(json.code, 0);
  t.match(JSON.parse(json.stdout), { name: 'smd', pid: d.proc.pid });

  const health = await smctl(d.socket, 'health');
  t.match(health.stdout, /^db\s+ok/m);
  t.equal(health.code, JSON.parse((await smctl(d.socket, '--json', 'health')).stdout).ok ? 0 : 1, 'exit code follows overall health');

  const tables = await smctl(d.socket, 'db', 'tables');
  t.equal(tables.code, 0);
  t.match(tables.stdout, /^NAME\s+ROWS$/m);
  t.match(tables.stdout, /^operations\s+0$/m);
  const describe = await smctl(d.socket, 'db', 'describe', 'users');
  t.match(describe.stdout, /stateCheckSum\s+BLOB/);

  const ops = await smctl(d.socket, '--json', 'ops', 'ls');
  t.same(JSON.parse(ops.stdout), []);

  const missing = await smctl(d.socket, 'ops', 'get', 'nope');
  t.equal(missing.code, 1);
  t.match(missing.stderr, /NOT_FOUND: operation nope not found/);

  const readOnly = await smctl(d.readOnlySocket, 'db', 'tables');
  t.equal(readOnly.code, 0, 'read commands work on the read-only socket');

  const unreachable = await smctl(d.dir + '/no.sock', 'info');
  t.equal(unreachable.code, 3);
  t.match(unreachable.stderr, /cannot connect/);

  const usage = await smctl(d.socket, 'frobnicate');
  t.equal(usage.code, 2);
});
