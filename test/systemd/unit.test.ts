import t, { type Test } from 'tap';
import { HARDENING, quoteWord, renderEnvironment, renderExecStart, renderText, renderUnit, unitNameFor, type UnitSpec } from '../../src/systemd/unit.js';
import { unitNameFromPath, unitObjectPath, u64, usecToMs } from '../../src/systemd/manager.js';
import { isSmError } from '../../src/errors.js';

function throwsSm(t: Test, fn: () => unknown, msg: string): void {
  try {
    fn();
    t.fail(`${msg}: did not throw`);
  } catch (err) {
    t.ok(isSmError(err), msg);
  }
}

const base: UnitSpec = { description: 'demo', command: ['/bin/app', '--serve'] };

/** Directive lines of a rendered unit (no section headers, no blanks). */
const directives = (text: string) => text.split('\n').filter((l) => l && !l.startsWith('['));

t.test('ExecStart quoting follows systemd rules', async (t) => {
  t.equal(renderExecStart(['/bin/echo', 'a b']), '"/bin/echo" "a b"');
  t.equal(renderExecStart(['/bin/echo', '']), '"/bin/echo" ""');
  t.equal(renderExecStart(['/bin/echo', 'say "hi"']), '"/bin/echo" "say \\"hi\\""');
  t.equal(renderExecStart(['/bin/echo', 'back\\slash']), '"/bin/echo" "back\\\\slash"');
  t.equal(renderExecStart(['/bin/echo', "it's"]), `"/bin/echo" "it's"`);
  t.equal(renderExecStart(['/bin/echo', '100%', '%n']), '"/bin/echo" "100%%" "%%n"');
  t.equal(renderExecStart(['/bin/echo', '$HOME', '${X}', '$$']), '"/bin/echo" "$$HOME" "$${X}" "$$$$"');
  t.equal(renderExecStart(['/bin/echo', 'a\nb', 'c\td', 'e\rf']), '"/bin/echo" "a\\nb" "c\\td" "e\\rf"');
  t.equal(renderExecStart(['/bin/echo', '\x01\x1b\x7f']), '"/bin/echo" "\\x01\\x1b\\x7f"');
  t.equal(renderExecStart(['/bin/echo', ';']), '"/bin/echo" \\;', 'a lone ; is escaped, not quoted');
  t.equal(renderExecStart(['/bin/echo', 'a;b']), '"/bin/echo" "a;b"');
  t.equal(renderExecStart(['/bin/echo', 'üñí€😀']), '"/bin/echo" "üñí€😀"');
  t.equal(renderExecStart(['-/bin/echo']), '"-/bin/echo"', 'a leading prefix character stays part of the path');
  t.throws(() => renderExecStart([]), 'empty argv rejected');
  t.throws(() => renderExecStart(['']), 'empty program rejected');
  t.throws(() => renderExecStart(['/bin/echo', 'a\0b']), 'NUL rejected');
});

t.test('quoteWord leaves $ alone when asked', async (t) => {
  t.equal(quoteWord('a$b%c', { dollar: false }), '"a$b%%c"');
  t.equal(quoteWord('a$b', { dollar: true }), '"a$$b"');
});

t.test('Environment= values are quoted whole; names are validated', async (t) => {
  t.equal(renderEnvironment('A', 'x y'), '"A=x y"');
  t.equal(renderEnvironment('A', 'q"\\'), '"A=q\\"\\\\"');
  t.equal(renderEnvironment('A', '50%'), '"A=50%%"');
  t.equal(renderEnvironment('A', '$HOME'), '"A=$HOME"', 'Environment= does not expand $');
  t.equal(renderEnvironment('A', 'l1\nl2'), '"A=l1\\nl2"');
  t.equal(renderEnvironment('_x9', ''), '"_x9="');
  for (const bad of ['', '1A', 'A-B', 'A B', 'A=B', 'A\nB']) {
    throwsSm(t, () => renderEnvironment(bad, 'v'), `name ${JSON.stringify(bad)} rejected`);
  }
});

t.test('no value can inject a directive or continue a line', async (t) => {
  const evil = 'x\n[Service]\nExecStartPre=/bin/false\n';
  const text = renderUnit({
    ...base,
    description: `desc${evil}trailing\\`,
    command: ['/bin/app', evil, 'tail\\'],
    env: { EVIL: evil, PERCENT: '%h' },
  });
  const lines = directives(text);
  t.notOk(lines.some((l) => l.startsWith('ExecStartPre')), 'no ExecStartPre line');
  t.equal(text.split('\n').filter((l) => l === '[Service]').length, 1, 'one [Service] section');
  t.notOk(text.split('\n').some((l) => l.endsWith('\\')), 'no line ends with a continuation backslash');
  t.match(text, /^Description=descx \[Service\] ExecStartPre=\/bin\/false trailing$/m);
  t.notOk(/[\x00-\x09\x0b-\x1f]/.test(text), 'no control characters but newlines');
});

t.test('a directive holding a newline or another control character is refused, naming it', async (t) => {
  for (const line of ['Nice=1\nUser=root', 'Nice=1\rUser=root', 'Nice=\x7f1', 'Nice=1\x00']) {
    t.throws(() => renderUnit({ ...base, extraServiceLines: [line] }), { message: /directive contains a control character/, details: { line } }, JSON.stringify(line));
  }
  t.match(renderUnit({ ...base, extraServiceLines: ['Nice=1'] }), /^Nice=1$/m, 'a clean directive is kept');
});

t.test('renderText flattens control characters and doubles %', async (t) => {
  t.equal(renderText('a\nb\tc'), 'a b c');
  t.equal(renderText('50% off'), '50%% off');
  t.equal(renderText('\n\n'), 'smd service');
});

t.test('a full unit has the hardening, limits, restart policy and timeouts', async (t) => {
  const text = renderUnit({
    description: 'web',
    command: ['/usr/bin/web', '-p', '80'],
    env: { PORT: '80' },
    workingDirectory: '/srv',
    user: 61001,
    group: 61001,
    rootDirectory: '/var/lib/smd/rootfs/web',
    networkNamespacePath: '/run/netns/smd-web',
    bindMounts: [{ source: '/var/lib/smd/data/web', target: '/data' }, { source: '/etc/resolv.conf', target: '/etc/resolv.conf', readOnly: true }],
    readWritePaths: ['/var/lib/smd/data/web'],
    limits: { memoryMax: 64 * 1024 * 1024, cpuQuota: 50, tasksMax: 32 },
    restart: { policy: 'on-failure', restartSec: 2, burst: 5, intervalSec: 60 },
    startTimeoutSec: 30,
    stopTimeoutSec: 1.5,
  });
  const lines = directives(text);
  for (const h of HARDENING) t.ok(lines.includes(h), h);
  for (const l of [
    'Type=exec',
    'ExecStart="/usr/bin/web" "-p" "80"',
    'Environment="PORT=80"',
    'WorkingDirectory=/srv',
    'User=61001',
    'Group=61001',
    'RootDirectory=/var/lib/smd/rootfs/web',
    'NetworkNamespacePath=/run/netns/smd-web',
    'BindPaths=/var/lib/smd/data/web:/data',
    'BindReadOnlyPaths=/etc/resolv.conf:/etc/resolv.conf',
    'ReadWritePaths=/var/lib/smd/data/web',
    'MemoryMax=67108864',
    'CPUQuota=50%',
    'TasksMax=32',
    'PrivateDevices=yes',
    'Restart=on-failure',
    'RestartSec=2',
    'StartLimitBurst=5',
    'StartLimitIntervalSec=60',
    'TimeoutStartSec=30',
    'TimeoutStopSec=1500ms',
  ]) {
    t.ok(lines.includes(l), l);
  }
  t.notOk(lines.includes('MemoryDenyWriteExecute=yes'), 'W^X only on request');
  t.equal(lines.filter((l) => l.startsWith('SyslogIdentifier=')).length, 1);
  t.ok(lines.includes('SyslogIdentifier=%N'), 'the stream identifier is the unit name without .service (smd-<id>)');
  throwsSm(t, () => renderUnit({ ...base, extraServiceLines: ['SyslogIdentifier=smd-other'] }), 'SyslogIdentifier= cannot be overridden');
  const unitSection = text.slice(0, text.indexOf('[Service]'));
  t.match(unitSection, /StartLimitBurst=5/, 'start limits live in [Unit]');
});

t.test('devices: closed policy with an allow list instead of PrivateDevices', async (t) => {
  const lines = directives(renderUnit({ ...base, devices: ['/dev/ttyUSB0', { path: '/dev/i2c-1', access: 'r' }] }));
  t.ok(lines.includes('PrivateDevices=no'));
  t.ok(lines.includes('DevicePolicy=closed'));
  t.ok(lines.includes('DeviceAllow=/dev/ttyUSB0 rw'));
  t.ok(lines.includes('DeviceAllow=/dev/i2c-1 r'));
  t.throws(() => renderUnit({ ...base, devices: ['/etc/passwd'] }));
  t.throws(() => renderUnit({ ...base, devices: [{ path: '/dev/null', access: 'rwx' }] }));
});

t.test('unsafe paths, names and numbers are rejected', async (t) => {
  const bad: Partial<UnitSpec>[] = [
    { workingDirectory: 'relative' },
    { workingDirectory: '/a b' },
    { workingDirectory: '/a\nExecStartPre=/x' },
    { rootDirectory: '/x/../etc' },
    { rootDirectory: '/x%n' },
    { bindMounts: [{ source: '/a:b', target: '/c' }] },
    { networkNamespacePath: '/run/netns/"x"' },
    { user: 'root\nUser=0' },
    { user: -1 },
    { group: 'Bad Name' },
    { limits: { memoryMax: 1.5 } },
    { limits: { cpuQuota: 0 } },
    { limits: { tasksMax: -3 } },
    { restart: { policy: 'sometimes' as 'always' } },
    { restart: { policy: 'always', restartSec: -1 } },
    { startTimeoutSec: Number.NaN },
    { extraServiceLines: ['not a directive'] },
    { extraServiceLines: ['Nice=1\nUser=0'] },
  ];
  for (const b of bad) throwsSm(t, () => renderUnit({ ...base, ...b }), JSON.stringify(b));
  t.equal(unitNameFor('web-1'), 'smd-web-1.service');
  t.throws(() => unitNameFor('../x'));
  t.throws(() => unitNameFor(''));
});

t.test('type notify gets NotifyAccess=main', async (t) => {
  const lines = directives(renderUnit({ ...base, type: 'notify' }));
  t.ok(lines.includes('Type=notify'));
  t.ok(lines.includes('NotifyAccess=main'));
});

t.test('unit object paths and number conversions', async (t) => {
  t.equal(unitObjectPath('smd-a.service'), '/org/freedesktop/systemd1/unit/smd_2da_2eservice');
  t.equal(unitObjectPath('a@b\\x2d.service'), '/org/freedesktop/systemd1/unit/a_40b_5cx2d_2eservice');
  for (const n of ['smd-a.service', 'smd-üñí.service', 'x@y:z.service', 'dbus.socket']) t.equal(unitNameFromPath(unitObjectPath(n)), n, n);
  t.equal(unitNameFromPath('/org/freedesktop/systemd1/unit/bad_zz'), null);
  t.equal(u64(0xffffffffffffffffn), null, 'UINT64_MAX means not set');
  t.equal(u64(123n), 123);
  t.equal(u64({ signature: 't', value: 7n }), 7, 'variants are unwrapped');
  t.equal(u64('x'), null);
  t.equal(usecToMs(0n), null, '0 is never');
  t.equal(usecToMs(1_700_000_000_123_456n), 1_700_000_000_123);
});
