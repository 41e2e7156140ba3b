/** Parsers of /proc and cgroup files on recorded text, and the cgroup reader on a fake tree. */
import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readUnitCgroup } from '../../src/monitoring/cgroup.js';
import { cpuBusyPercent, cpuPercentOfOne, parseCpuStatUsageNs, parseMeminfo, parseProcCgroup, parseProcStat, parseStatusRss } from '../../src/monitoring/proc.js';
import { folderUsage } from '../../src/monitoring/storage.js';
import { tempDir } from '../helpers/daemon.js';

const STAT1 = 'cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\nintr 1 2 3\n';
const STAT2 = 'cpu  200 0 100 900 50 0 0 0 0 0\ncpu0 100 0 50 450 25 0 0 0 0 0\ncpu1 100 0 50 450 25 0 0 0 0 0\n';
const MEMINFO = 'MemTotal:       24683344 kB\nMemFree:        23653820 kB\nMemAvailable:   23836976 kB\nBuffers:           12345 kB\n';
// Recorded on this host: a unit of a sandboxed `systemd --user` on a cgroup v1/hybrid host.
const PROC_CGROUP = `9:name=systemd:/smd-sandbox-p580H0.slice/app.slice/probe1.service
8:pids:/smd-sandbox-p580H0.slice/app.slice/probe1.service
7:blkio:/smd-sandbox-p580H0.slice
4:memory:/process_api/f561c0e50c06dac03071a9be8f83630b/smd-sandbox-p580H0.slice
3:cpuset:/
2:cpuacct:/smd-sandbox-p580H0.slice
1:cpu:/smd-sandbox-p580H0.slice/app.slice
0::/smd-sandbox-p580H0.slice/app.slice/probe1.service
`;
const CPU_STAT = 'usage_usec 1101019\nuser_usec 1082101\nsystem_usec 18917\nnice_usec 0\n';

t.test('/proc/stat and /proc/meminfo', async (t) => {
  t.same(parseProcStat(STAT1), { total: 1000, idle: 850 });
  t.equal(cpuBusyPercent(parseProcStat(STAT1), parseProcStat(STAT2)), 60, '150 busy of 250 jiffies');
  t.equal(cpuBusyPercent(null, parseProcStat(STAT2)), null);
  t.equal(cpuBusyPercent(parseProcStat(STAT2), parseProcStat(STAT2)), null, 'no time passed');
  t.equal(parseProcStat('garbage'), null);
  t.same(parseMeminfo(MEMINFO), { totalBytes: 24683344 * 1024, availableBytes: 23836976 * 1024, usedBytes: (24683344 - 23836976) * 1024 });
  t.equal(parseMeminfo('nothing'), null);
  t.equal(parseMeminfo('MemTotal: 1000 kB\nMemFree: 100 kB\nCached: 50 kB\n')!.availableBytes, 150 * 1024, 'old kernels without MemAvailable');
});

t.test('cgroup files', async (t) => {
  const entries = parseProcCgroup(PROC_CGROUP);
  t.equal(entries.length, 8);
  t.same(entries.at(-1), { hierarchy: 0, controllers: [], path: '/smd-sandbox-p580H0.slice/app.slice/probe1.service' });
  t.same(entries[0]!.controllers, ['name=systemd']);
  t.same(parseProcCgroup('1:cpu,cpuacct:/a.service\n')[0]!.controllers, ['cpu', 'cpuacct']);
  t.equal(parseCpuStatUsageNs(CPU_STAT), 1101019000);
  t.equal(parseCpuStatUsageNs('user_usec 1\n'), null);
  t.equal(parseStatusRss('Name:\tsh\nVmRSS:\t    1234 kB\n'), 1234 * 1024);
  t.equal(parseStatusRss('Name:\tkthreadd\n'), null, 'kernel threads have no VmRSS');
  t.equal(cpuPercentOfOne(0, 500_000_000, 1000), 50);
  t.equal(cpuPercentOfOne(0, 2_000_000_000, 1000), 200, 'two CPUs');
  t.equal(cpuPercentOfOne(null, 5, 1000), null);
  t.equal(cpuPercentOfOne(10, 5, 1000), null, 'counter went back (unit restarted)');
});

/** A fake /proc and /sys/fs/cgroup with the hybrid layout recorded above. */
function fakeTree(root: string, opts: { v2Memory?: boolean; cpuStat?: boolean } = {}) {
  const proc = join(root, 'proc');
  const cg = join(root, 'cgroup');
  const unitPath = '/smd-sandbox-p580H0.slice/app.slice/probe1.service';
  mkdirSync(join(proc, '42'), { recursive: true });
  mkdirSync(join(proc, '43'), { recursive: true });
  writeFileSync(join(proc, '42', 'cgroup'), PROC_CGROUP);
  writeFileSync(join(proc, '42', 'status'), 'Name:\tsh\nVmRSS:\t    1000 kB\n');
  writeFileSync(join(proc, '43', 'status'), 'Name:\tsleep\nVmRSS:\t     500 kB\n');
  for (const h of ['unified', 'cpuacct', 'pids', 'systemd']) {
    mkdirSync(join(cg, h), { recursive: true });
    writeFileSync(join(cg, h, 'cgroup.procs'), '1\n');
  }
  const v2 = join(cg, 'unified', unitPath);
  mkdirSync(v2, { recursive: true });
  writeFileSync(join(v2, 'cgroup.procs'), '42\n43\n');
  writeFileSync(join(v2, 'cgroup.threads'), '42\n43\n44\n');
  if (opts.cpuStat !== false) writeFileSync(join(v2, 'cpu.stat'), CPU_STAT);
  if (opts.v2Memory) writeFileSync(join(v2, 'memory.current'), '777\n');
  // The cpuacct cgroup is the sandbox's slice, NOT the unit's: it must never be used for the unit.
  mkdirSync(join(cg, 'cpuacct', '/smd-sandbox-p580H0.slice'), { recursive: true });
  writeFileSync(join(cg, 'cpuacct', '/smd-sandbox-p580H0.slice', 'cpuacct.usage'), '999999999999\n');
  mkdirSync(join(cg, 'pids', unitPath), { recursive: true });
  writeFileSync(join(cg, 'pids', unitPath, 'pids.current'), '3\n');
  return { cgroupRoot: cg, procRoot: proc };
}

t.test('cgroup reader: v2 cpu.stat, RSS fallback, pids; never a parent slice', async (t) => {
  const paths = fakeTree(tempDir(t));
  const u = await readUnitCgroup('probe1.service', 42, paths);
  t.same(u, { cpuUsageNs: 1101019000, memoryBytes: 1500 * 1024, tasks: 3, sources: ['v2:cpu.stat', 'rss-sum', 'pids.current'] });
  const v2mem = await readUnitCgroup('probe1.service', 42, fakeTree(tempDir(t), { v2Memory: true }));
  t.equal(v2mem.memoryBytes, 777);
  const noCpu = await readUnitCgroup('probe1.service', 42, fakeTree(tempDir(t), { cpuStat: false }));
  t.equal(noCpu.cpuUsageNs, null, "the slice's cpuacct.usage is not the unit's");
  t.same(await readUnitCgroup('other.service', 42, paths), { cpuUsageNs: null, memoryBytes: null, tasks: null, sources: [] }, 'another unit');
  t.same(await readUnitCgroup('probe1.service', 4242, paths), { cpuUsageNs: null, memoryBytes: null, tasks: null, sources: [] }, 'gone process');
  t.same((await readUnitCgroup('probe1.service', null, paths)).sources, [], 'no main pid');
  t.same((await readUnitCgroup('probe1.service', 42, { cgroupRoot: '/nonexistent', procRoot: paths.procRoot })).cpuUsageNs, null, 'no cgroup fs: null, no crash');
});

t.test('folder usage: a bounded walk that counts allocated blocks', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'a/b'), { recursive: true });
  writeFileSync(join(dir, 'a/b/f'), Buffer.alloc(100_000, 1));
  writeFileSync(join(dir, 'g'), Buffer.alloc(50_000, 1));
  const u = await folderUsage(dir, { mountPoints: new Set() });
  t.equal(u.source, 'du');
  t.equal(u.exact, true);
  t.ok(u.usedBytes >= 150_000 && u.usedBytes < 200_000, `${u.usedBytes} bytes`);
  const bounded = await folderUsage(dir, { mountPoints: new Set(), maxEntries: 2 });
  t.equal(bounded.exact, false, 'stopped at the bound');
  t.same(await folderUsage(join(dir, 'missing'), { mountPoints: new Set() }), { usedBytes: 0, exact: true, source: 'none' });
  const mounted = await folderUsage(dir, { mountPoints: new Set([dir]) });
  t.equal(mounted.source, 'statfs', 'a mount point of its own is read with statfs');
});
