/**
 * Per-unit numbers from the unit's cgroup, for what systemd does not report (CPUUsageNSec needs
 * the cpu controller delegated; MemoryCurrent needs the memory controller — neither is true
 * under a `systemd --user` manager on a cgroup v1/hybrid host). The unit's cgroup is found from
 * its main process (/proc/<pid>/cgroup); only a cgroup whose path ends in `/<unit>` is used, so a
 * parent slice's totals are never taken for the unit's.
 *
 *   CPU:    v2 `cpu.stat` usage_usec (present even without the cpu controller), else v1
 *           `cpuacct.usage` — else null.
 *   memory: v2 `memory.current`, else v1 `memory.usage_in_bytes`, else the sum of VmRSS of the
 *           cgroup's processes (an upper bound: shared pages count once per process) — else null.
 *   tasks:  v2/v1 `pids.current`, else the number of threads in `cgroup.threads` / `tasks`.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseCpuStatUsageNs, parseProcCgroup, parseStatusRss, type CgroupEntry } from './proc.js';

export interface CgroupUsage {
  cpuUsageNs: number | null;
  memoryBytes: number | null;
  tasks: number | null;
  /** Where the numbers came from, for diagnostics (e.g. `v2:cpu.stat`). */
  sources: string[];
}

export interface CgroupPaths {
  /** Where cgroup hierarchies are mounted (default /sys/fs/cgroup). */
  cgroupRoot?: string;
  /** Default /proc. */
  procRoot?: string;
}

const read = (p: string) => readFile(p, 'utf8').catch(() => null);
const isDir = (p: string) =>
  stat(p).then(
    (s) => s.isDirectory(),
    () => false,
  );

/** The directory of a hierarchy's cgroup, or null if it is not mounted where expected. */
async function cgroupDir(root: string, e: CgroupEntry): Promise<string | null> {
  const candidates: string[] = [];
  if (e.hierarchy === 0 && e.controllers.length === 0) candidates.push(join(root, 'unified'), root);
  else {
    const names = e.controllers.map((c) => c.replace(/^name=/, ''));
    candidates.push(join(root, names.join(',')), ...names.map((n) => join(root, n)));
  }
  for (const base of candidates) {
    const dir = join(base, e.path);
    // A v2 root also has cgroup.controllers; a v1 root has cgroup.procs. Either proves the mount.
    if ((await isDir(dir)) && ((await read(join(base, 'cgroup.procs'))) !== null)) return dir;
  }
  return null;
}

function num(text: string | null): number | null {
  if (text === null) return null;
  const n = Number(text.trim());
  return Number.isFinite(n) ? n : null;
}

/** Reads what the unit's cgroup tells; every field null when nothing is readable. Never throws. */
export async function readUnitCgroup(unit: string, mainPid: number | null, paths: CgroupPaths = {}): Promise<CgroupUsage> {
  const root = paths.cgroupRoot ?? '/sys/fs/cgroup';
  const proc = paths.procRoot ?? '/proc';
  const usage: CgroupUsage = { cpuUsageNs: null, memoryBytes: null, tasks: null, sources: [] };
  if (!mainPid || mainPid <= 0) return usage;
  const text = await read(join(proc, String(mainPid), 'cgroup'));
  if (text === null) return usage;
  const own = parseProcCgroup(text).filter((e) => e.path.endsWith(`/${unit}`) || e.path.includes(`/${unit}/`));
  const v2 = own.find((e) => e.hierarchy === 0 && e.controllers.length === 0);
  const v1 = (ctrl: string) => own.find((e) => e.controllers.includes(ctrl));
  const v2dir = v2 ? await cgroupDir(root, { ...v2, path: unitPath(v2.path, unit) }) : null;
  const v1dir = async (ctrl: string) => {
    const e = v1(ctrl);
    return e ? cgroupDir(root, { ...e, path: unitPath(e.path, unit) }) : null;
  };

  // CPU
  if (v2dir) {
    usage.cpuUsageNs = parseCpuStatUsageNs((await read(join(v2dir, 'cpu.stat'))) ?? '');
    if (usage.cpuUsageNs !== null) usage.sources.push('v2:cpu.stat');
  }
  if (usage.cpuUsageNs === null) {
    const d = await v1dir('cpuacct');
    const n = d ? num(await read(join(d, 'cpuacct.usage'))) : null;
    if (n !== null) (usage.cpuUsageNs = n), usage.sources.push('v1:cpuacct.usage');
  }

  // Memory
  if (v2dir) {
    const n = num(await read(join(v2dir, 'memory.current')));
    if (n !== null) (usage.memoryBytes = n), usage.sources.push('v2:memory.current');
  }
  if (usage.memoryBytes === null) {
    const d = await v1dir('memory');
    const n = d ? num(await read(join(d, 'memory.usage_in_bytes'))) : null;
    if (n !== null) (usage.memoryBytes = n), usage.sources.push('v1:memory.usage_in_bytes');
  }
  const procsDir = v2dir ?? (await v1dir('name=systemd')) ?? (await v1dir('pids'));
  if (usage.memoryBytes === null && procsDir) {
    const pids = ((await read(join(procsDir, 'cgroup.procs'))) ?? '').split('\n').filter(Boolean);
    let sum = 0;
    let any = false;
    for (const pid of pids.slice(0, 4096)) {
      const rss = parseStatusRss((await read(join(proc, pid, 'status'))) ?? '');
      if (rss !== null) (sum += rss), (any = true);
    }
    if (any) (usage.memoryBytes = sum), usage.sources.push('rss-sum');
  }

  // Tasks
  for (const d of [v2dir, await v1dir('pids')]) {
    if (!d || usage.tasks !== null) continue;
    const n = num(await read(join(d, 'pids.current')));
    if (n !== null) (usage.tasks = n), usage.sources.push('pids.current');
  }
  if (usage.tasks === null && procsDir) {
    const threads = (await read(join(procsDir, v2dir ? 'cgroup.threads' : 'tasks'))) ?? (await read(join(procsDir, 'tasks')));
    if (threads !== null) (usage.tasks = threads.split('\n').filter(Boolean).length), usage.sources.push('threads');
  }
  return usage;
}

/** The cgroup path of the unit itself (the main process may sit in a sub-cgroup of it). */
function unitPath(path: string, unit: string): string {
  const i = path.indexOf(`/${unit}/`);
  return i >= 0 ? path.slice(0, i + unit.length + 1) : path;
}
