/**
 * Storage quotas as loop-mounted ext4 images, for real: mounts happen inside a sandbox's private
 * mount namespace (the one its systemd units inherit), so nothing is mounted on the host.
 */
import t from 'tap';
import { join } from 'node:path';
import { chmodSync } from 'node:fs';
import { ROOT, tempDir } from '../helpers/daemon.js';
import { startSandbox, type Sandbox } from '../helpers/sandbox.js';

const TSX = import.meta.resolve('tsx');
const QUOTA = join(ROOT, 'src/fs/quota.ts');
const MiB = 1024 * 1024;
const UID = 5321;

let sb: Sandbox;
let base: string;

/** Runs `body` (an async function body with `q` = the quota module) inside the sandbox; returns its JSON result. */
async function inside<T = unknown>(body: string): Promise<T> {
  const code = `import * as q from ${JSON.stringify(QUOTA)}; const r = await (async () => { ${body} })(); process.stdout.write(JSON.stringify(r ?? null));`;
  const r = await sb.exec(process.execPath, ['--import', TSX, '--input-type=module', '-e', code], { timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`inside failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

async function loopsOf(image: string): Promise<string> {
  return (await sb.run('losetup', ['-j', image])).trim();
}

t.before(async () => {
  sb = await startSandbox(t);
  // Not below the sandbox's 0700 scratch dir: the probe unit runs as an unprivileged uid.
  base = tempDir(t, 'smd-quota-');
  chmodSync(base, 0o755);
  // systemd wants User= resolvable; the sandbox has a private /etc.
  await sb.run('groupadd', ['-g', String(UID), 'smdquota']);
  await sb.run('useradd', ['-r', '-u', String(UID), '-g', String(UID), '-M', '-s', '/usr/sbin/nologin', 'smdquota']);
});

t.teardown(async () => {
  // Unmount and detach whatever a failed test left behind (the sandbox teardown would also unmount lazily).
  if (sb) await inside(`for (const m of await q.quotaMountsUnder(${JSON.stringify(base)})) await q.releaseQuotaMount(m);`).catch(() => undefined);
});

t.test('a unit writing past its quota gets ENOSPC; another folder is unaffected; data survives a remount', async (t) => {
  const a = join(base, 'a');
  const b = join(base, 'b');
  await sb.run('mkdir', ['-p', b]);
  await sb.run('chown', [`${UID}:${UID}`, b]);
  const st = await inside<{ mounted: boolean; limitBytes: number }>(`return q.ensureQuotaMount(${JSON.stringify(a)}, ${MiB}, { uid: ${UID}, gid: ${UID} });`);
  t.match(st, { mounted: true, limitBytes: MiB });
  t.equal((await sb.run('stat', ['-c', '%u:%g', a])).trim(), `${UID}:${UID}`, 'the mounted root belongs to the service');
  t.match(await loopsOf(`${a}.img`), /^\/dev\/loop\d+/, 'backed by a loop device');
  // Idempotent.
  t.match(await inside(`return q.ensureQuotaMount(${JSON.stringify(a)}, ${MiB}, { uid: ${UID}, gid: ${UID} });`), { mounted: true });
  t.equal((await sb.run('grep', ['-c', ` ${a} `, '/proc/self/mountinfo'])).trim(), '1', 'mounted once');

  // A unit running as the service's uid: 2 MiB into the 1 MiB folder, 1 MiB into the other.
  const unit = 'smd-quota-probe.service';
  const script = [
    `dd if=/dev/zero of=${a}/big bs=64k count=32 2>${b}/dd-a.err; echo "a=$?" > ${b}/result`,
    `dd if=/dev/zero of=${b}/ok bs=64k count=16 2>/dev/null; echo "b=$?" >> ${b}/result`,
  ].join('; ');
  await sb.exec('sh', ['-c', `cat > ${join(sb.unitDir, unit)}`], { input: `[Service]\nType=oneshot\nUser=${UID}\nGroup=${UID}\nExecStart=/bin/sh -c '${script}'\n` });
  await sb.run('systemctl', ['--user', 'daemon-reload']);
  const started = await sb.exec('systemctl', ['--user', 'start', unit], { timeoutMs: 30_000 });
  t.equal(started.code, 0, `the probe unit ran: ${started.stderr}`);
  t.equal((await sb.run('cat', [`${b}/result`])).trim(), 'a=1\nb=0', 'the write past the quota failed, the other succeeded');
  t.match(await sb.run('cat', [`${b}/dd-a.err`]), /No space left on device/, 'ENOSPC inside the service');
  t.equal((await sb.run('stat', ['-c', '%s', `${b}/ok`])).trim(), String(MiB), 'the other folder got everything');
  const usage = await inside<{ totalBytes: number; usedBytes: number; availableBytes: number }>(`return q.quotaUsage(${JSON.stringify(a)});`);
  t.ok(usage.totalBytes <= MiB && usage.totalBytes > MiB * 0.8, `file system of ${usage.totalBytes} bytes`);
  t.ok(usage.availableBytes < 64 * 1024, `full: ${usage.availableBytes} bytes left`);
  const written = Number((await sb.run('stat', ['-c', '%s', `${a}/big`])).trim());
  t.ok(written > MiB / 2 && written <= MiB, `${written} bytes written before ENOSPC`);

  // Release keeps the data; the loop device is detached; a remount shows the same file.
  t.equal(await inside(`return q.releaseQuotaMount(${JSON.stringify(a)});`), true);
  t.equal(await loopsOf(`${a}.img`), '', 'loop device detached');
  t.equal((await sb.exec('test', ['-e', `${a}/big`])).code, 1, 'unmounted: the folder is empty underneath');
  t.equal(await inside(`return q.releaseQuotaMount(${JSON.stringify(a)});`), false, 'releasing twice is harmless');
  await inside(`return q.ensureQuotaMount(${JSON.stringify(a)}, ${MiB}, { uid: ${UID}, gid: ${UID} });`);
  t.equal(Number((await sb.run('stat', ['-c', '%s', `${a}/big`])).trim()), written, 'data kept across the remount');

  // Remove: unmounted, image gone, no loop device left.
  await inside(`return q.removeQuota(${JSON.stringify(a)});`);
  t.equal((await sb.exec('test', ['-e', `${a}.img`])).code, 1, 'image removed');
  t.equal((await sb.exec('mountpoint', ['-q', a])).code !== 0, true, 'not mounted');
});

t.test('grow online, shrink offline, refuse a shrink below the data', async (t) => {
  const d = join(base, 'resize');
  await inside(`return q.ensureQuotaMount(${JSON.stringify(d)}, ${MiB}, { uid: 0, gid: 0 });`);
  await sb.run('dd', ['if=/dev/zero', `of=${d}/f`, 'bs=64k', 'count=12']);
  const grown = await inside<{ mounted: boolean }>(`await q.resizeQuota(${JSON.stringify(d)}, ${4 * MiB}); return q.quotaUsage(${JSON.stringify(d)});`);
  t.ok((grown as unknown as { totalBytes: number }).totalBytes > 3 * MiB, 'grown while mounted');
  t.equal((await sb.exec('dd', ['if=/dev/zero', `of=${d}/g`, 'bs=64k', 'count=32'])).code, 0, 'the extra space is usable');
  await sb.run('rm', [`${d}/g`]);
  const shrunk = await inside<{ totalBytes: number }>(`await q.resizeQuota(${JSON.stringify(d)}, ${2 * MiB}); return q.quotaUsage(${JSON.stringify(d)});`);
  t.ok(shrunk.totalBytes <= 2 * MiB && shrunk.totalBytes > MiB, `shrunk to ${shrunk.totalBytes}`);
  t.equal(Number((await sb.run('stat', ['-c', '%s', `${d}/f`])).trim()), 12 * 64 * 1024, 'data kept');
  const refused = await inside<{ code: string }>(`try { await q.resizeQuota(${JSON.stringify(d)}, 300 * 1024); return { code: 'none' }; } catch (e) { return { code: e.code }; }`);
  t.equal(refused.code, 'LIMIT');
  t.equal((await sb.exec('mountpoint', ['-q', d])).code, 0, 'mounted again after the refused shrink');
  t.equal(Number((await sb.run('stat', ['-c', '%s', `${d}/f`])).trim()), 12 * 64 * 1024, 'data intact');
  await inside(`return q.removeQuota(${JSON.stringify(d)});`);
  t.equal(await loopsOf(`${d}.img`).catch(() => ''), '');
});

t.test('existing files move into a new quota; too much data is refused with LIMIT and left in place', async (t) => {
  const d = join(base, 'existing');
  await sb.run('mkdir', ['-p', join(d, 'sub')]);
  await sb.run('sh', ['-c', `echo hello > ${d}/sub/file`]);
  await inside(`return q.ensureQuotaMount(${JSON.stringify(d)}, ${MiB}, { uid: 0, gid: 0 });`);
  t.equal((await sb.exec('mountpoint', ['-q', d])).code, 0);
  t.equal((await sb.run('cat', [`${d}/sub/file`])).trim(), 'hello', 'moved into the image');
  await inside(`return q.releaseQuotaMount(${JSON.stringify(d)});`);
  t.equal((await sb.exec('test', ['-e', `${d}/sub`])).code, 1, 'nothing left underneath');
  await inside(`return q.removeQuota(${JSON.stringify(d)});`);

  const big = join(base, 'big');
  await sb.run('mkdir', ['-p', big]);
  await sb.run('dd', ['if=/dev/zero', `of=${big}/f`, 'bs=64k', 'count=32']);
  const r = await inside<{ code: string }>(`try { await q.ensureQuotaMount(${JSON.stringify(big)}, ${MiB}, { uid: 0, gid: 0 }); return { code: 'none' }; } catch (e) { return { code: e.code }; }`);
  t.equal(r.code, 'LIMIT');
  t.equal((await sb.exec('mountpoint', ['-q', big])).code !== 0, true, 'not mounted');
  t.equal(Number((await sb.run('stat', ['-c', '%s', `${big}/f`])).trim()), 2 * MiB, 'the data is where it was');
  t.equal((await sb.exec('test', ['-e', `${big}.img`])).code, 1, 'no image left');
  t.equal(await loopsOf(join(base, 'big.img')).catch(() => ''), '');
  const small = await inside<{ code: string }>(`try { await q.ensureQuotaMount(${JSON.stringify(join(base, 'tiny'))}, 1000, { uid: 0, gid: 0 }); return { code: 'none' }; } catch (e) { return { code: e.code }; }`);
  t.equal(small.code, 'LIMIT', 'a limit below the minimum is refused');
});
