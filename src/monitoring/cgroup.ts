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
import { closeSync, existsSync, openSync, readSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseCpuStatUsageNs, parseProcCgroup, parseStatmRss, parseStatusRss, type CgroupEntry } from './proc.js';

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

// ------------------------------------------------------------------ the per-sample fast path

/**
 * Where the cgroup hierarchies of this machine are: pure v2 (`<root>/cgroup.controllers`), hybrid
 * (v2 at `<root>/unified` beside v1 controllers) or v1 only. Detected once at start.
 */
export interface CgroupLayout {
  kind: 'v2' | 'hybrid' | 'v1' | 'none';
  /** Directory of the v2 hierarchy, null without one. */
  unified: string | null;
  /** Directories of the v1 hierarchies smd reads, by controller. */
  v1: { cpuacct: string | null; memory: string | null; pids: string | null; systemd: string | null };
}

export function detectCgroupLayout(root = '/sys/fs/cgroup'): CgroupLayout {
  const mounted = (d: string) => existsSync(join(d, 'cgroup.procs'));
  const first = (...dirs: string[]) => dirs.map((d) => join(root, d)).find(mounted) ?? null;
  const v1 = { cpuacct: first('cpuacct', 'cpu,cpuacct', 'cpuacct,cpu'), memory: first('memory'), pids: first('pids'), systemd: first('systemd') };
  if (existsSync(join(root, 'cgroup.controllers'))) return { kind: 'v2', unified: root, v1: { cpuacct: null, memory: null, pids: null, systemd: null } };
  const unified = existsSync(join(root, 'unified', 'cgroup.controllers')) ? join(root, 'unified') : null;
  const anyV1 = Object.values(v1).some((d) => d !== null);
  return { kind: unified ? (anyV1 ? 'hybrid' : 'v2') : anyV1 ? 'v1' : 'none', unified, v1 };
}

/** The files of one unit's cgroup that exist, resolved once per cgroup path. */
export interface UnitCgroupFiles {
  cpu: { path: string; kind: 'v2:cpu.stat' | 'v1:cpuacct.usage' } | null;
  memory: { path: string; kind: 'v2:memory.current' | 'v1:memory.usage_in_bytes' } | null;
  tasks: string | null;
  /** The unit's processes, for the RSS sum when no memory controller counts for the unit. */
  procs: string | null;
  /** The unit's threads, counted when no pids controller does. */
  threads: string | null;
}

/**
 * Which files tell a unit's numbers, given systemd's ControlGroup of it. Only the unit's own
 * cgroup directory counts: where a controller is not realized for the unit (no directory of that
 * path in that hierarchy) nothing of it is used, so a parent slice's totals never pass for the
 * unit's.
 */
export function resolveUnitCgroupFiles(layout: CgroupLayout, controlGroup: string): UnitCgroupFiles {
  const file = (base: string | null, name: string) => {
    if (!base) return null;
    const p = join(base, controlGroup, name);
    return existsSync(p) ? p : null;
  };
  const v2cpu = file(layout.unified, 'cpu.stat');
  const v1cpu = v2cpu ? null : file(layout.v1.cpuacct, 'cpuacct.usage');
  const v2mem = file(layout.unified, 'memory.current');
  const v1mem = v2mem ? null : file(layout.v1.memory, 'memory.usage_in_bytes');
  const tasks = file(layout.unified, 'pids.current') ?? file(layout.v1.pids, 'pids.current');
  return {
    cpu: v2cpu ? { path: v2cpu, kind: 'v2:cpu.stat' } : v1cpu ? { path: v1cpu, kind: 'v1:cpuacct.usage' } : null,
    memory: v2mem ? { path: v2mem, kind: 'v2:memory.current' } : v1mem ? { path: v1mem, kind: 'v1:memory.usage_in_bytes' } : null,
    tasks,
    procs: v2mem || v1mem ? null : (file(layout.unified, 'cgroup.procs') ?? file(layout.v1.systemd, 'cgroup.procs')),
    threads: tasks ? null : (file(layout.unified, 'cgroup.threads') ?? file(layout.v1.systemd, 'tasks')),
  };
}

interface OpenUnit {
  controlGroup: string;
  files: UnitCgroupFiles;
  /** Descriptors kept open between samples: a cgroup or /proc file re-read at offset 0 is regenerated. */
  cpuFd: number | null;
  memFd: number | null;
  tasksFd: number | null;
  procsFd: number | null;
  threadsFd: number | null;
  /** /proc/<pid>/statm of the unit's processes (the RSS sum), by pid. */
  statm: Map<string, number>;
}

/** At most this many processes of one unit are summed for its RSS. */
const MAX_PROCS = 4096;

/**
 * Reads units' memory, tasks and CPU from their cgroup files: the files are resolved once per
 * cgroup path (learned from systemd's ControlGroup) and kept open; each sample is one pread per
 * file (a few µs each), synchronous because these are tiny in-kernel files — an async readFile
 * costs open+fstat+read+close through the thread pool, ~0.3 ms per file here, measured. The RSS
 * sum (no memory controller for the unit) preads the unit's cgroup.procs and each process's
 * /proc/<pid>/statm, also kept open. A read that fails (the cgroup went away) drops the unit; it
 * is resolved again on its next read.
 */
export class CgroupReader {
  private readonly units = new Map<string, OpenUnit>();
  private buf = Buffer.allocUnsafe(8192);
  private readonly proc: string;
  private detected: { layout: CgroupLayout; pageSize: number } | null = null;

  constructor(private readonly paths: CgroupPaths & { layout?: CgroupLayout; pageSize?: number } = {}) {
    this.proc = paths.procRoot ?? '/proc';
  }

  /** The machine's layout and page size, found on first use. */
  private get machine(): { layout: CgroupLayout; pageSize: number } {
    this.detected ??= {
      layout: this.paths.layout ?? detectCgroupLayout(this.paths.cgroupRoot),
      pageSize: this.paths.pageSize ?? pageSizeOf(readPath('/proc/self/status'), readPath('/proc/self/statm')),
    };
    return this.detected;
  }

  get layout(): CgroupLayout {
    return this.machine.layout;
  }

  /** The unit's numbers from its cgroup `controlGroup` (systemd's path); fields null when unreadable. Never throws. */
  read(unit: string, controlGroup: string): CgroupUsage {
    let u = this.units.get(unit);
    if (u && u.controlGroup !== controlGroup) this.forget(unit), (u = undefined);
    if (!u) {
      const f = resolveUnitCgroupFiles(this.machine.layout, controlGroup);
      u = { controlGroup, files: f, cpuFd: openOrNull(f.cpu?.path), memFd: openOrNull(f.memory?.path), tasksFd: openOrNull(f.tasks), procsFd: openOrNull(f.procs), threadsFd: openOrNull(f.threads), statm: new Map() };
      this.units.set(unit, u);
    }
    const usage: CgroupUsage = { cpuUsageNs: null, memoryBytes: null, tasks: null, sources: [] };
    let failed = false;
    const pread = (fd: number | null): string | null => {
      if (fd === null) return null;
      const text = this.preadAll(fd);
      if (text === null) failed = true;
      return text;
    };
    const cpuText = pread(u.cpuFd);
    if (cpuText !== null && u.files.cpu) {
      usage.cpuUsageNs = u.files.cpu.kind === 'v2:cpu.stat' ? parseCpuStatUsageNs(cpuText) : num(cpuText);
      if (usage.cpuUsageNs !== null) usage.sources.push(u.files.cpu.kind);
    }
    const memText = pread(u.memFd);
    if (memText !== null && u.files.memory) {
      usage.memoryBytes = num(memText);
      if (usage.memoryBytes !== null) usage.sources.push(u.files.memory.kind);
    }
    const tasksText = pread(u.tasksFd);
    if (tasksText !== null) {
      usage.tasks = num(tasksText);
      if (usage.tasks !== null) usage.sources.push('pids.current');
    }
    const procs = pread(u.procsFd);
    if (procs !== null) {
      const live = new Set<string>();
      let sum = 0;
      let any = false;
      for (const pid of procs.split('\n')) {
        if (!pid || live.size >= MAX_PROCS) continue;
        live.add(pid);
        let fd = u.statm.get(pid);
        if (fd === undefined) {
          const opened = openOrNull(join(this.proc, pid, 'statm'));
          if (opened === null) continue; // exited meanwhile
          u.statm.set(pid, (fd = opened));
        }
        const text = this.preadAll(fd);
        if (text === null) {
          // The process is gone (ESRCH); a new one with its pid is opened afresh next time.
          closeQuietly(fd);
          u.statm.delete(pid);
          continue;
        }
        const rss = parseStatmRss(text, this.machine.pageSize);
        if (rss !== null) (sum += rss), (any = true);
      }
      for (const [pid, fd] of u.statm) if (!live.has(pid)) closeQuietly(fd), u.statm.delete(pid);
      if (any) (usage.memoryBytes = sum), usage.sources.push('rss-sum');
    }
    const threads = pread(u.threadsFd);
    if (threads !== null && usage.tasks === null) (usage.tasks = countLines(threads)), usage.sources.push('threads');
    if (failed) this.forget(unit);
    return usage;
  }

  /** Close a unit's files (stopped or removed); it is resolved again on its next read. */
  forget(unit: string): void {
    const u = this.units.get(unit);
    if (!u) return;
    for (const fd of [u.cpuFd, u.memFd, u.tasksFd, u.procsFd, u.threadsFd, ...u.statm.values()]) if (fd !== null) closeQuietly(fd);
    this.units.delete(unit);
  }

  /** Units whose files are open. */
  openUnits(): string[] {
    return [...this.units.keys()];
  }

  close(): void {
    for (const unit of [...this.units.keys()]) this.forget(unit);
  }

  /** The whole file from offset 0; a short read is its end (these files are generated whole per read). Null on error. */
  private preadAll(fd: number): string | null {
    try {
      let n = readSync(fd, this.buf, 0, this.buf.length, 0);
      while (n === this.buf.length) {
        const bigger = Buffer.allocUnsafe(this.buf.length * 2);
        this.buf.copy(bigger);
        this.buf = bigger;
        n += readSync(fd, this.buf, n, this.buf.length - n, n);
      }
      return this.buf.toString('latin1', 0, n);
    } catch {
      return null;
    }
  }
}

function countLines(text: string): number {
  let n = 0;
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

/** A small /proc or /sys file read whole with one synchronous read (≤ 16 KiB; null when unreadable). */
export function readPath(path: string): string | null {
  const fd = openOrNull(path);
  if (fd === null) return null;
  try {
    const buf = Buffer.allocUnsafe(16384);
    return buf.toString('latin1', 0, readSync(fd, buf, 0, buf.length, 0));
  } catch {
    return null;
  } finally {
    closeQuietly(fd);
  }
}

/** The page size (statm counts pages): VmRSS (kB) over statm's resident pages, to a power of two; 4096 if unreadable. */
export function pageSizeOf(status: string | null, statm: string | null): number {
  const rssKb = /^VmRSS:\s+(\d+)\s*kB/m.exec(status ?? '');
  const pages = Number((statm ?? '').split(' ')[1]);
  if (!rssKb || !(pages > 0)) return 4096;
  const ratio = (Number(rssKb[1]) * 1024) / pages;
  return 2 ** Math.max(12, Math.round(Math.log2(ratio)));
}

function openOrNull(path: string | null | undefined): number | null {
  if (!path) return null;
  try {
    return openSync(path, 'r');
  } catch {
    return null;
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed: nothing to release
  }
}
