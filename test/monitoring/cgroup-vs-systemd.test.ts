/**
 * The cgroup-file figures of a monitoring sample against systemd's own, on real units of the
 * sandbox's `systemd --user`: TasksCurrent, MemoryCurrent and CPUUsageNSec as `systemctl show`
 * reports them. Where systemd reports none (this manager has no memory or cpu controller of the
 * unit on a v1/hybrid host: "[not set]"), the figure is compared instead with the kernel's view
 * of the processes systemd lists for the unit (GetUnitProcesses): their RSS from `ps` and their
 * CPU time from /proc/<pid>/stat — sources the monitor does not read.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openDatabase } from '../../src/db/database.js';
import { services } from '../../src/db/schema.js';
import { silentLogger } from '../../src/log.js';
import { Monitor, type ServiceUsage } from '../../src/monitoring/monitor.js';
import { SystemdManager } from '../../src/systemd/index.js';
import { tempDir } from '../helpers/daemon.js';
import { startSandbox, type Sandbox } from '../helpers/sandbox.js';

const MB = 1024 * 1024;
let sb: Sandbox;
let sd: SystemdManager;

t.before(async () => {
  sb = await startSandbox(t);
  sd = new SystemdManager({ bus: sb.bus, unitDir: sb.unitDir, logger: silentLogger });
  await sd.connect();
  t.teardown(() => sd.close());
});

async function show(unit: string): Promise<{ memory: number | null; tasks: number | null; cpuNs: number | null; cgroup: string }> {
  const out = await sb.run('systemctl', ['--user', 'show', unit, '-p', 'MemoryCurrent,TasksCurrent,CPUUsageNSec,ControlGroup']);
  const kv = Object.fromEntries(out.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  const n = (v: string | undefined) => (v === undefined || v === '' || v === '[not set]' ? null : Number(v));
  return { memory: n(kv.MemoryCurrent), tasks: n(kv.TasksCurrent), cpuNs: n(kv.CPUUsageNSec), cgroup: kv.ControlGroup ?? '' };
}

/** The unit's processes as systemd lists them. */
async function unitPids(unit: string): Promise<number[]> {
  const out = await sb.run('busctl', ['--user', 'call', 'org.freedesktop.systemd1', '/org/freedesktop/systemd1', 'org.freedesktop.systemd1.Manager', 'GetUnitProcesses', 's', unit]);
  // a(sus) N "cgroup" pid "cmdline" ...
  return [...out.matchAll(/"[^"]*" (\d+) "/g)].map((m) => Number(m[1]));
}

/** CPU time of the processes (own + waited-for children), ns, from /proc/<pid>/stat (10 ms ticks). */
function procCpuNs(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  }
  return ticks * 10_000_000;
}

t.test('tasks, memory and CPU from the cgroup files match systemd (or, where it has none, the kernel)', async (t) => {
  const dir = tempDir(t);
  const { db, close } = openDatabase(join(dir, 'smd.db'));
  t.teardown(close);
  const unit = 'smd-cgcompare.service';
  // ~30 MB in a shell variable, two sleeping children, and a busy loop.
  const script = 'x=$(head -c 30000000 /dev/zero | tr "\\\\0" a); sleep 1000 & sleep 1000 & while :; do :; done';
  await sd.writeUnit(unit, `[Service]\nType=exec\nExecStart=/bin/sh -c '${script}'\n`);
  await sd.startUnit(unit);
  t.teardown(() => sd.stopUnit(unit).catch(() => undefined));
  db.insert(services).values({ id: 'cgcompare', version: 1, unit, createdAt: Date.now(), updatedAt: Date.now() }).run();
  const m = new Monitor({ db, systemd: sd, logger: silentLogger, dataDir: dir, intervalMs: 60_000 });
  t.teardown(() => m.stop());
  const sample = async (): Promise<ServiceUsage> => {
    await m.sampleNow();
    return m.get('cgcompare').services[0]!;
  };

  // Wait (bounded) for the steady state: 3 tasks, the memory held, some CPU used. Tasks alone do
  // not say it: while the variable fills, sh + head + tr are 3 tasks too, and then 2.
  const steady = async (minCpuNs: number): Promise<ServiceUsage | undefined> => {
    let u: ServiceUsage | undefined;
    const until = Date.now() + 30_000;
    while (Date.now() < until) {
      u = await sample();
      if (u.tasks === 3 && (u.memory ?? 0) > 30 * MB && (u.cpuUsageNs ?? 0) > minCpuNs) break;
      await new Promise((r) => setTimeout(r, 50)); // the unit runs between samples
    }
    return u;
  };
  const u = await steady(300e6);
  t.match(u, { activeState: 'active', tasks: 3 }, `steady state reached: ${JSON.stringify(u)}`);

  const sys = await show(unit);
  t.ok(sys.cgroup.endsWith(`/${unit}`), `systemd's ControlGroup ${sys.cgroup}`);

  // TasksCurrent: systemd reads pids.current, as the monitor does.
  const a = await sample();
  t.equal(a.tasks, sys.tasks, `tasks: files ${a.tasks}, systemd ${sys.tasks}`);

  // MemoryCurrent.
  const pids = await unitPids(unit);
  t.equal(pids.length, 3, `systemd lists the unit's processes: ${pids.join(' ')}`);
  if (sys.memory !== null) {
    t.ok(Math.abs(a.memory! - sys.memory) <= Math.max(2 * MB, 0.1 * sys.memory), `memory: files ${a.memory}, systemd ${sys.memory}`);
  } else {
    t.comment('systemd reports no MemoryCurrent for this unit here (no memory cgroup of its own); comparing with ps');
    const ps = await sb.run('ps', ['-o', 'rss=', '-p', pids.join(',')]);
    const rss = ps.trim().split(/\s+/).reduce((s, v) => s + Number(v) * 1024, 0);
    const b = await sample();
    t.ok(Math.abs(b.memory! - rss) <= Math.max(1 * MB, 0.05 * rss), `memory: files ${b.memory}, ps RSS sum ${rss}`);
  }

  // CPUUsageNSec: the value must lie between two file readings taken around systemd's (or the kernel's).
  const before = (await sample()).cpuUsageNs!;
  const sys2 = await show(unit);
  const ref = sys2.cpuNs ?? procCpuNs(pids);
  const after = (await sample()).cpuUsageNs!;
  if (sys2.cpuNs === null) t.comment('systemd reports no CPUUsageNSec here (no cpu accounting delegated); comparing with /proc/<pid>/stat');
  // /proc/<pid>/stat counts in 10 ms ticks: allow 50 ms and 5 % around the bracket.
  const tol = Math.max(50e6, 0.05 * ref);
  t.ok(ref >= before - tol && ref <= after + tol, `cpu: files ${before}..${after} ns, ${sys2.cpuNs === null ? 'kernel' : 'systemd'} ${ref} ns`);
  t.ok(after > before, 'the busy loop keeps counting');

  // Stopped: the files are let go; started again: a new cgroup, read afresh.
  await sd.stopUnit(unit);
  t.match(await sample(), { activeState: 'inactive', memory: 0, tasks: 0 });
  await sd.startUnit(unit);
  const again = await steady(0);
  t.match(again, { activeState: 'active', tasks: 3 }, `steady again: ${JSON.stringify(again)}`);
  t.equal(again!.tasks, (await show(unit)).tasks, 'after a restart the new cgroup is read');
  t.ok(again!.cpuUsageNs! < before, `the new cgroup counts from zero: ${again!.cpuUsageNs} < ${before}`);
});
