/**
 * Service sandboxing, checked on the real stack (scripts/sandbox: systemd --user, D-Bus, overlayfs):
 *  (a) every unit smd writes scores OK or better in `systemd-analyze --user security`;
 *  (b) a service cannot reach or read another service's storage, and can write its own /data.
 *
 * Method for (b): a probe runs as a transient unit (`systemd-run --user --wait --pipe`) with the
 * [Service] properties of service A's own unit file (RootDirectory= on A's overlay, BindPaths= of
 * A's storage on /data, User=, NetworkNamespacePath=, ProtectProc=, PrivateTmp=, seccomp filter,
 * empty capability sets, ...) and only ExecStart replaced: the same view of the system a
 * compromised A has, built by the same manager from the same directives. nsenter into A's
 * MainPID would share A's mount namespace but not its seccomp filter, capability bounding set
 * or NoNewPrivileges, so it would test a stronger process than A. The same probe from B's own
 * properties reads B's file (a positive control: the probe can see what it should). A second,
 * independent layer is checked too: even on the host's file system, A's uid cannot read B's file.
 */
import t from 'tap';
import Database from 'better-sqlite3';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { buildExampleImages, startDaemon, tempDir, type RunningDaemon } from '../helpers/daemon.js';
import { startSandbox, type Sandbox } from '../helpers/sandbox.js';
import type { RpcClient } from '../../src/cli/client.js';

interface Op {
  state: string;
  error: { code: string; message: string } | null;
}
interface Svc {
  id: string;
  uid: number;
  unit: string;
  live?: { activeState: string; mainPid: number | null } | null;
}

let sb: Sandbox;
let d: RunningDaemon;
let c: RpcClient;
let img: Record<string, string>;

t.before(async () => {
  sb = await startSandbox(t);
  const dir = tempDir(t);
  img = buildExampleImages(join(dir, 'images')).byName;
  d = await startDaemon(t, { dir, sandbox: sb });
  c = await d.client();
  const installs: [string, Record<string, unknown>][] = [
    ['hello-http', { image: img['hello-http-v1'] }],
    ['writer', { image: img['writer-v1'] }],
    // The other rendering branch: allowed devices (PrivateDevices=no, DevicePolicy=closed) and limits.
    ['devices', { image: img['writer-v1'], id: 'devices', version: 1, settings: { deviceResources: ['/dev/null'], memoryMax: 64 << 20, tasksMax: 32 } }],
  ];
  for (const [id, params] of installs) {
    const op = await c.call<Op>('services.install', { ...params, wait: true });
    if (op.state !== 'succeeded') throw new Error(`install ${id} failed: ${JSON.stringify(op.error)}`);
  }
});

/** [Service] directives of a unit file, as Key=Value lines. */
function serviceDirectives(text: string): string[] {
  const lines = text.split('\n');
  const start = lines.indexOf('[Service]');
  const out: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (line.startsWith('[')) break;
    if (/^[A-Z][A-Za-z]+=/.test(line)) out.push(line);
  }
  return out;
}

t.test('(a) every service unit scores OK or better in systemd-analyze security', async (t) => {
  const units = ['smd-hello-http.service', 'smd-writer.service', 'smd-devices.service'];
  for (const unit of units) {
    t.ok(existsSync(join(sb.unitDir, unit)), `${unit} written`);
    const r = await sb.exec('systemd-analyze', ['--user', 'security', '--no-pager', unit], { timeoutMs: 30_000 });
    const m = /Overall exposure level for \S+: ([\d.]+) (\w+)/.exec(r.stdout);
    t.ok(m, `${unit}: systemd-analyze gave an overall level (exit ${r.code}) ${r.stderr.trim()}`);
    if (!m) continue;
    const exposure = Number(m[1]);
    const level = m[2]!;
    t.comment(`${unit}: exposure ${exposure} ${level}`);
    const costs = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('✗'))
      .map((l) => l.replace(/\s{2,}/g, ' | ').trim())
      .join('\n');
    t.ok(['SAFE', 'OK'].includes(level) && exposure < 2.0, `${unit}: ${exposure} ${level} is OK or better`, { costs });
  }
});

t.test('(b) a service cannot reach or read another service\'s storage; its own /data is writable', async (t) => {
  const a = await c.call<Svc>('services.get', { id: 'hello-http' });
  const b = await c.call<Svc>('services.get', { id: 'writer' });
  t.equal(a.live?.activeState, 'active');
  t.equal(b.live?.activeState, 'active');
  t.not(a.uid, b.uid, 'each service has its own uid');
  const db = new Database(d.dbPath, { readonly: true });
  const storageOf = (id: string) => (db.prepare('SELECT storageFolder FROM users WHERE serviceid = ?').get(id) as { storageFolder: string }).storageFolder;
  const aData = storageOf('hello-http');
  const bData = storageOf('writer');
  db.close();
  // B (writer) writes a tick every second into its /data.
  const bFile = join(bData, 'ticks.log');
  for (let i = 0; i < 50 && !existsSync(bFile); i++) await new Promise((r) => setTimeout(r, 100));
  t.ok(existsSync(bFile), `B's file exists on the host: ${bFile}`);
  t.comment(`B's storage: ${bData} mode ${(statSync(bData).mode & 0o777).toString(8)}, ticks.log mode ${(statSync(bFile).mode & 0o777).toString(8)}`);

  const probe = (marker: string) =>
    [
      `B=${bData}`,
      `BPID=${b.live!.mainPid}`,
      'echo "uid=$(id -u)"',
      'test -e "$B" && echo B_PATH_VISIBLE',
      'cat "$B/ticks.log" >/dev/null 2>&1 && echo B_READABLE',
      'test -e "/proc/$BPID" && echo B_PROC_VISIBLE',
      'ls "/proc/$BPID/root/" >/dev/null 2>&1 && echo B_PROC_ROOT_VISIBLE',
      'cat "/proc/$BPID/root/data/ticks.log" >/dev/null 2>&1 && echo B_READABLE_VIA_PROC',
      // Anything named like B's file anywhere in this root (not /proc): A has no ticks.log of its own.
      'find / -path /proc -prune -o -name ticks.log -print 2>/dev/null | sed "s/^/FOUND /"',
      'cat /data/ticks.log >/dev/null 2>&1 && echo OWN_DATA_READABLE',
      `echo ${marker} > /data/${marker} && echo OWN_DATA_WRITABLE`,
      'exit 0',
    ].join('\n');

  /** Runs `script` as a transient unit with `svc`'s unit properties (ExecStart replaced). */
  const runAs = async (svc: Svc, script: string) => {
    const props = serviceDirectives(readFileSync(join(sb.unitDir, svc.unit), 'utf8')).filter(
      (l) => !/^(Type|ExecStart|Restart|RestartSec|TimeoutStartSec|Environment|WorkingDirectory)=/.test(l),
    );
    const args = ['--user', '--wait', '--pipe', '--quiet', '--collect', '-p', 'WorkingDirectory=/', '-p', 'Environment=PATH=/bin:/usr/bin', ...props.flatMap((p) => ['-p', p]), '--', '/bin/sh', '-c', script];
    return sb.exec('systemd-run', args, { timeoutMs: 30_000 });
  };

  const fromA = await runAs(a, probe('probe-a'));
  t.equal(fromA.code, 0, `probe as A ran: ${fromA.stderr.trim()}`);
  const outA = fromA.stdout.split('\n').filter(Boolean);
  t.comment(`probe as A: ${outA.join(' | ')}`);
  t.ok(outA.includes(`uid=${a.uid}`), `the probe ran as A's uid ${a.uid}`);
  for (const bad of ['B_PATH_VISIBLE', 'B_READABLE', 'B_PROC_VISIBLE', 'B_PROC_ROOT_VISIBLE', 'B_READABLE_VIA_PROC']) t.notOk(outA.includes(bad), `A: not ${bad}`);
  t.same(
    outA.filter((l) => l.startsWith('FOUND ')),
    [],
    'no file of B anywhere in A\'s file system',
  );
  t.ok(outA.includes('OWN_DATA_WRITABLE'), 'A can write its own /data');
  t.ok(existsSync(join(aData, 'probe-a')), 'and the file lands in A\'s storage folder on the host');
  t.equal(statSync(join(aData, 'probe-a')).uid, a.uid, 'owned by A\'s uid');

  // Positive control: the same probe with B's properties sees B's own data.
  const fromB = await runAs(b, probe('probe-b'));
  const outB = fromB.stdout.split('\n').filter(Boolean);
  t.comment(`probe as B: ${outB.join(' | ')}`);
  t.ok(outB.includes('OWN_DATA_READABLE'), 'control: the probe with B\'s properties reads B\'s /data/ticks.log');
  t.ok(outB.includes('FOUND /data/ticks.log'), 'control: and finds it');

  // Second layer: with the host's whole file system in view, A's uid still cannot read B's file.
  const dac = await sb.exec('setpriv', ['--reuid', String(a.uid), '--regid', String(a.uid), '--clear-groups', '--', 'cat', bFile]);
  t.not(dac.code, 0, `A's uid cannot read B's file on the host either (${dac.stderr.trim()})`);
  const ls = await sb.exec('setpriv', ['--reuid', String(a.uid), '--regid', String(a.uid), '--clear-groups', '--', 'ls', bData]);
  t.comment(`A's uid listing B's storage folder on the host: exit ${ls.code}${ls.code === 0 ? ` (lists: ${ls.stdout.trim().split('\n').join(', ')})` : ''}`);
});
