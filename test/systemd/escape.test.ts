/**
 * Round trips through the real systemd: what renderUnit writes is exactly what the service sees,
 * and the full hardening starts under the sandbox's user manager with RootDirectory= and User=.
 */
import t from 'tap';
import { chmod, chown, copyFile, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SystemdManager } from '../../src/systemd/manager.js';
import { renderUnit, HARDENING } from '../../src/systemd/unit.js';
import { silentLogger } from '../../src/log.js';
import { startSandbox } from '../helpers/sandbox.js';

const sb = await startSandbox(t);
const mgr = new SystemdManager({ bus: sb.bus, unitDir: sb.unitDir, logger: silentLogger });
t.teardown(() => mgr.close());
await mgr.connect();

const NASTY = [
  'plain',
  'with space',
  '  padded  ',
  '',
  'double"quote',
  "single'quote",
  `"'mixed'"`,
  'back\\slash',
  'trailing\\',
  '\\;',
  ';',
  'a;b',
  '100%',
  '%n %% %i %h',
  '$HOME',
  '${HOME}',
  '$$',
  '$',
  'line1\nline2',
  'x\n[Service]\nExecStartPre=/bin/false',
  'tab\there',
  'cr\rhere',
  '\x01\x02\x1b\x7f',
  '\\n literally',
  '\\x41',
  'üñí€😀',
  '-dash',
  '@at',
  '+plus',
  '!bang',
  '#hash',
  'Environment=INJECTED=1',
];

/** `Type=oneshot` unit whose stdout goes to a file the manager opens (outside the service's namespace). */
async function runOneshot(name: string, command: string[], env: Record<string, string> = {}): Promise<Buffer> {
  const out = join(sb.dir, `${name}.out`);
  const text = renderUnit({ description: `roundtrip ${name}`, type: 'oneshot', command, env, extraServiceLines: [`StandardOutput=truncate:${out}`] });
  await mgr.writeUnit(name, text);
  await mgr.startUnit(name); // a oneshot's start job is done when the program has exited 0
  return readFile(out);
}

t.test('every argv word arrives exactly as given', async (t) => {
  // $0 and the script itself contain $ and % too, which must survive as well.
  const script = 'for a in "$0" "$@"; do printf "%s\\0" "$a"; done';
  const got = await runOneshot('smd-argv.service', ['/bin/sh', '-c', script, ...NASTY]);
  const words = got.toString('utf8').split('\0').slice(0, -1);
  t.same(words, NASTY);
});

t.test('every Environment= value arrives exactly as given', async (t) => {
  const env: Record<string, string> = {};
  NASTY.forEach((v, i) => (env[`V${i}`] = v));
  const script = 'i=0; while [ $i -lt $N ]; do eval "printf \'%s\\0\' \\"\\$V$i\\""; i=$((i+1)); done';
  const got = await runOneshot('smd-env.service', ['/bin/sh', '-c', script], { ...env, N: String(NASTY.length) });
  const values = got.toString('utf8').split('\0').slice(0, -1);
  t.same(values, NASTY);
});

t.test('the full hardening starts with RootDirectory= and User= under the user manager', async (t) => {
  // A minimal root: /bin/sh and the C library it needs.
  const root = join(sb.dir, 'rootfs');
  const data = join(sb.dir, 'data');
  for (const d of ['bin', 'lib/x86_64-linux-gnu', 'lib64', 'data', 'proc', 'dev', 'tmp']) await mkdir(join(root, d), { recursive: true });
  const ldd = await sb.run('ldd', ['/bin/sh']);
  for (const lib of ldd.matchAll(/(\/\S+\.so[.\d]*)/g)) {
    await mkdir(join(root, lib[1]!, '..'), { recursive: true });
    await copyFile(lib[1]!, join(root, lib[1]!));
  }
  await copyFile('/bin/sh', join(root, 'bin/sh'));
  await chmod(join(root, 'bin/sh'), 0o755);
  await mkdir(data, { recursive: true });
  await chown(data, 65534, 65534);
  await sb.run('mkfifo', [join(data, 'fifo')]); // the service blocks reading it (no writer)
  await chown(join(data, 'fifo'), 65534, 65534);

  const name = 'smd-hardened.service';
  const text = renderUnit({
    description: 'hardened',
    command: ['/bin/sh', '-c', 'echo "uid=$(id -u 2>/dev/null || echo none)" > /data/out; echo written >> /data/out; read x < /data/fifo'],
    user: 65534,
    group: 65534,
    rootDirectory: root,
    bindMounts: [{ source: data, target: '/data' }],
    readWritePaths: [data],
    limits: { memoryMax: 32 << 20, cpuQuota: 50, tasksMax: 8 },
    restart: { policy: 'on-failure', restartSec: 1, burst: 3, intervalSec: 30 },
    startTimeoutSec: 5,
    memoryDenyWriteExecute: true,
  });
  for (const h of HARDENING) t.ok(text.includes(`\n${h}\n`), h);
  await mgr.writeUnit(name, text);
  await mgr.startUnit(name);
  const view = await mgr.getUnit(name);
  t.equal(view.activeState, 'active', `active (${view.subState}, result ${view.result})`);
  t.ok(view.mainPid, 'running');
  const status = await readFile(`/proc/${view.mainPid}/status`, 'utf8');
  t.match(status, /^Uid:\s+65534\s/m, 'runs as the service uid');
  t.match(status, /^NoNewPrivs:\s+1$/m, 'no new privileges');
  t.match(status, /^CapBnd:\s+0+$/m, 'empty capability bounding set');
  t.match(status, /^Seccomp:\s+2$/m, 'seccomp filter');
  const out = await readFile(join(data, 'out'), 'utf8');
  t.match(out, /written/, 'wrote through the bind mount');
  await mgr.stopUnit(name);

  // A device allow list instead of PrivateDevices also starts.
  const dev = 'smd-devices.service';
  await mgr.writeUnit(dev, renderUnit({ description: 'devices', type: 'oneshot', command: ['/bin/sh', '-c', 'test -c /dev/null'], devices: ['/dev/null'], user: 65534 }));
  const r = await mgr.startUnit(dev);
  t.equal(r.jobResult, 'done', 'DevicePolicy=closed + DeviceAllow start');
});
