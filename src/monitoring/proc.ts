/** Pure parsers of /proc and cgroup files (unit-tested on recorded text). */

export interface CpuTimes {
  /** All jiffies of the aggregate `cpu` line. */
  total: number;
  /** idle + iowait jiffies. */
  idle: number;
}

/** The aggregate `cpu` line of /proc/stat. */
export function parseProcStat(text: string): CpuTimes | null {
  const line = text.split('\n').find((l) => l.startsWith('cpu '));
  if (!line) return null;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  if (f.length < 4 || f.some((n) => !Number.isFinite(n))) return null;
  // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return { total, idle: f[3]! + (f[4] ?? 0) };
}

/** Busy percent of all CPUs (0..100) between two /proc/stat readings; null without a delta. */
export function cpuBusyPercent(prev: CpuTimes | null, cur: CpuTimes | null): number | null {
  if (!prev || !cur) return null;
  const dt = cur.total - prev.total;
  if (dt <= 0) return null;
  return round2(Math.min(100, Math.max(0, (100 * (dt - (cur.idle - prev.idle))) / dt)));
}

export interface MemInfo {
  totalBytes: number;
  availableBytes: number;
  usedBytes: number;
}

export function parseMeminfo(text: string): MemInfo | null {
  const kb = (key: string) => {
    const m = new RegExp(`^${key}:\\s+(\\d+)\\s*kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : null;
  };
  const total = kb('MemTotal');
  if (total === null) return null;
  const available = kb('MemAvailable') ?? (kb('MemFree') ?? 0) + (kb('Buffers') ?? 0) + (kb('Cached') ?? 0);
  return { totalBytes: total, availableBytes: available, usedBytes: total - available };
}

export interface CgroupEntry {
  /** 0 for the unified (v2) hierarchy. */
  hierarchy: number;
  /** v1 controllers (e.g. ['cpu','cpuacct'] or ['name=systemd']); [] for v2. */
  controllers: string[];
  path: string;
}

/** /proc/<pid>/cgroup: `hierarchy-ID:controller-list:cgroup-path` per line. */
export function parseProcCgroup(text: string): CgroupEntry[] {
  const out: CgroupEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (!m) continue;
    out.push({ hierarchy: Number(m[1]), controllers: m[2] ? m[2].split(',') : [], path: m[3]! });
  }
  return out;
}

/** `usage_usec` of a v2 cpu.stat, in nanoseconds. */
export function parseCpuStatUsageNs(text: string): number | null {
  const m = /^usage_usec\s+(\d+)$/m.exec(text);
  return m ? Number(m[1]) * 1000 : null;
}

/** Resident memory of one process from /proc/<pid>/status (VmRSS), bytes. */
export function parseStatusRss(text: string): number | null {
  const m = /^VmRSS:\s+(\d+)\s*kB/m.exec(text);
  return m ? Number(m[1]) * 1024 : null;
}

/** Resident memory of one process from /proc/<pid>/statm (its 2nd field, pages), bytes; same figure as VmRSS, cheaper to read. */
export function parseStatmRss(text: string, pageSize = 4096): number | null {
  const f = text.split(' ');
  if (f.length < 2) return null;
  const pages = Number(f[1]);
  return Number.isFinite(pages) && f[1] !== '' ? pages * pageSize : null;
}

/** Percent of one CPU used between two cumulative usage readings (ns) over `wallMs`. */
export function cpuPercentOfOne(prevNs: number | null | undefined, curNs: number | null, wallMs: number): number | null {
  if (prevNs === null || prevNs === undefined || curNs === null || wallMs <= 0 || curNs < prevNs) return null;
  return round2(((curNs - prevNs) / 1e6 / wallMs) * 100);
}

export function round2(n: number): number {
  return Math.round(n * 100) / 100;
}
