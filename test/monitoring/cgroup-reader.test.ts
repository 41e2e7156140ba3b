/** The cgroup fast path on fake trees: layout detection, file resolution, kept-open reads. */
import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CgroupReader, detectCgroupLayout, pageSizeOf, resolveUnitCgroupFiles } from '../../src/monitoring/cgroup.js';
import { parseStatmRss } from '../../src/monitoring/proc.js';
import { tempDir } from '../helpers/daemon.js';

const CG = '/system.slice/app.service';

function put(path: string, text: string): void {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, text);
}

/** A pure v2 machine: one hierarchy at the root with every controller. */
function v2Tree(root: string) {
  put(join(root, 'cgroup.controllers'), 'cpu memory pids\n');
  put(join(root, 'cgroup.procs'), '1\n');
  put(join(root, CG, 'cpu.stat'), 'usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n');
  put(join(root, CG, 'memory.current'), '1048576\n');
  put(join(root, CG, 'pids.current'), '3\n');
  put(join(root, CG, 'cgroup.procs'), '10\n');
  // The slice's own totals: never the unit's.
  put(join(root, '/system.slice/memory.current'), '999999999\n');
}

/** v1 only: cpu,cpuacct co-mounted, memory and pids realized for the unit. */
function v1Tree(root: string) {
  for (const h of ['cpu,cpuacct', 'memory', 'pids', 'systemd']) put(join(root, h, 'cgroup.procs'), '1\n');
  put(join(root, 'cpu,cpuacct', CG, 'cpuacct.usage'), '123456789\n');
  put(join(root, 'memory', CG, 'memory.usage_in_bytes'), '2097152\n');
  put(join(root, 'pids', CG, 'pids.current'), '2\n');
  put(join(root, 'systemd', CG, 'cgroup.procs'), '10\n');
}

/** Hybrid as on these machines under `systemd --user`: v2 at unified (cpu.stat, no memory), v1 pids, no memory cgroup of the unit. */
function hybridTree(root: string, proc: string) {
  put(join(root, 'unified', 'cgroup.controllers'), '\n');
  put(join(root, 'unified', 'cgroup.procs'), '1\n');
  for (const h of ['cpuacct', 'memory', 'pids', 'systemd']) put(join(root, h, 'cgroup.procs'), '1\n');
  put(join(root, 'unified', CG, 'cpu.stat'), 'usage_usec 7000\n');
  put(join(root, 'unified', CG, 'cgroup.procs'), '10\n11\n');
  put(join(root, 'unified', CG, 'cgroup.threads'), '10\n11\n12\n');
  put(join(root, 'pids', CG, 'pids.current'), '3\n');
  put(join(root, 'cpuacct', '/system.slice', 'cpuacct.usage'), '5555555555\n'); // the slice's, not the unit's
  put(join(proc, '10', 'statm'), '1000 100 50 1 0 80 0\n');
  put(join(proc, '11', 'statm'), '2000 200 60 1 0 90 0\n');
}

t.test('layouts are told apart', async (t) => {
  const a = tempDir(t);
  v2Tree(a);
  t.match(detectCgroupLayout(a), { kind: 'v2', unified: a });
  const b = tempDir(t);
  v1Tree(b);
  t.match(detectCgroupLayout(b), { kind: 'v1', unified: null, v1: { cpuacct: join(b, 'cpu,cpuacct'), memory: join(b, 'memory'), pids: join(b, 'pids') } });
  const c = tempDir(t);
  hybridTree(c, join(c, 'proc'));
  t.match(detectCgroupLayout(c), { kind: 'hybrid', unified: join(c, 'unified'), v1: { cpuacct: join(c, 'cpuacct') } });
  t.match(detectCgroupLayout(join(c, 'nothing')), { kind: 'none', unified: null });
});

t.test('v2: cpu.stat, memory.current, pids.current of the unit itself', async (t) => {
  const root = tempDir(t);
  v2Tree(root);
  const r = new CgroupReader({ cgroupRoot: root, pageSize: 4096 });
  t.teardown(() => r.close());
  t.same(r.read('app.service', CG), { cpuUsageNs: 2_500_000, memoryBytes: 1048576, tasks: 3, sources: ['v2:cpu.stat', 'v2:memory.current', 'pids.current'] });
  // The same descriptors read the file again: new content is seen (cgroup files regenerate at offset 0).
  writeFileSync(join(root, CG, 'memory.current'), '2097152\n');
  writeFileSync(join(root, CG, 'cpu.stat'), 'usage_usec 9000\n');
  t.match(r.read('app.service', CG), { cpuUsageNs: 9_000_000, memoryBytes: 2097152 });
  t.same(r.openUnits(), ['app.service']);
  r.forget('app.service');
  t.same(r.openUnits(), []);
  t.same(r.read('gone.service', '/system.slice/gone.service'), { cpuUsageNs: null, memoryBytes: null, tasks: null, sources: [] }, 'no cgroup: nulls, no throw');
});

t.test('v1: cpuacct.usage, memory.usage_in_bytes, pids', async (t) => {
  const root = tempDir(t);
  v1Tree(root);
  const r = new CgroupReader({ cgroupRoot: root, pageSize: 4096 });
  t.teardown(() => r.close());
  t.same(r.read('app.service', CG), { cpuUsageNs: 123456789, memoryBytes: 2097152, tasks: 2, sources: ['v1:cpuacct.usage', 'v1:memory.usage_in_bytes', 'pids.current'] });
});

t.test('hybrid without a memory cgroup: RSS sum of the processes, never a slice total', async (t) => {
  const root = tempDir(t);
  const proc = join(root, 'proc');
  hybridTree(root, proc);
  const layout = detectCgroupLayout(root);
  const files = resolveUnitCgroupFiles(layout, CG);
  t.equal(files.memory, null);
  t.equal(files.cpu!.kind, 'v2:cpu.stat');
  t.equal(files.threads, null, 'pids.current counts tasks; threads are not needed');
  const r = new CgroupReader({ cgroupRoot: root, procRoot: proc, pageSize: 4096 });
  t.teardown(() => r.close());
  t.same(r.read('app.service', CG), { cpuUsageNs: 7_000_000, memoryBytes: 300 * 4096, tasks: 3, sources: ['v2:cpu.stat', 'pids.current', 'rss-sum'] });
  // A process exits and another starts: the list is read again, the gone one's statm closed.
  writeFileSync(join(root, 'unified', CG, 'cgroup.procs'), '11\n13\n');
  put(join(proc, '13', 'statm'), '10 5 1 1 0 1 0\n');
  t.match(r.read('app.service', CG), { memoryBytes: 205 * 4096 });
  // Without the cpu.stat file the slice's cpuacct.usage is NOT taken.
  const noCpu = tempDir(t);
  hybridTree(noCpu, join(noCpu, 'proc'));
  writeFileSync(join(noCpu, 'unified', CG, 'cpu.stat'), '');
  const r2 = new CgroupReader({ cgroupRoot: noCpu, procRoot: join(noCpu, 'proc'), pageSize: 4096 });
  t.teardown(() => r2.close());
  t.equal(r2.read('app.service', CG).cpuUsageNs, null);
});

t.test('statm and the page size', async (t) => {
  t.equal(parseStatmRss('1000 250 10 1 0 5 0\n', 4096), 250 * 4096);
  t.equal(parseStatmRss('', 4096), null);
  t.equal(pageSizeOf('VmRSS:\t  4000 kB\n', '9000 1000 1'), 4096);
  t.equal(pageSizeOf('VmRSS:\t 64000 kB\n', '9000 1000 1'), 65536);
  t.equal(pageSizeOf(null, null), 4096);
});
