/**
 * The programs smd runs, with the Debian package that has each: `system.health` names the ones
 * missing from PATH (checks.programs), so an operator learns what to install before the feature
 * that needs it fails.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { CheckResult } from './health.js';

export interface ProgramNeed {
  /** In PROGRAMS each one is needed; in OPAQUE_MARKERS any one will do (setfattr, else python3). */
  programs: readonly string[];
  package: string;
  for: string;
}

export const PROGRAMS: readonly ProgramNeed[] = [
  { programs: ['ip'], package: 'iproute2', for: 'service networks' },
  { programs: ['tc'], package: 'iproute2', for: 'bandwidth shaping' },
  { programs: ['iptables', 'iptables-save', 'iptables-restore'], package: 'iptables', for: 'traffic accounting' },
  { programs: ['mount', 'umount', 'losetup'], package: 'mount', for: 'service roots and quotas' },
  { programs: ['mkfs.ext4', 'e2fsck', 'resize2fs'], package: 'e2fsprogs', for: 'storage quotas' },
  { programs: ['useradd', 'userdel', 'groupadd', 'groupdel'], package: 'passwd', for: 'service accounts' },
  { programs: ['getent'], package: 'libc-bin', for: 'service accounts' },
  { programs: ['journalctl'], package: 'systemd', for: 'logs and journal alerts' },
  { programs: ['cp', 'mknod'], package: 'coreutils', for: 'quota resizes and layer whiteouts' },
  { programs: ['zstd'], package: 'zstd', for: 'zstd-compressed layers' },
];
/** One of these marks overlayfs opaque directories. */
const OPAQUE_MARKERS: ProgramNeed = { programs: ['setfattr', 'python3'], package: 'attr', for: 'opaque directories in layers' };

/** Pure: the needs not met, given whether a program exists. */
export function missingPrograms(exists: (program: string) => boolean, needs: readonly ProgramNeed[] = PROGRAMS): { program: string; package: string; for: string }[] {
  const missing: { program: string; package: string; for: string }[] = [];
  for (const need of needs) for (const program of need.programs) if (!exists(program)) missing.push({ program, package: need.package, for: need.for });
  if (!OPAQUE_MARKERS.programs.some(exists)) missing.push({ program: OPAQUE_MARKERS.programs.join(' or '), package: OPAQUE_MARKERS.package, for: OPAQUE_MARKERS.for });
  return missing;
}

/** Whether an executable `program` is in one of PATH's directories. */
export function inPath(program: string, path = process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'): boolean {
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, program), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/** The health check: ok when every program is there, else which are missing and what to install. */
export function programsCheck(exists: (program: string) => boolean = (p) => inPath(p)): CheckResult {
  const missing = missingPrograms(exists);
  if (missing.length === 0) return { ok: true, detail: 'every program smd runs is installed' };
  const packages = [...new Set(missing.map((m) => m.package))];
  return { ok: false, detail: `missing: ${missing.map((m) => `${m.program} (${m.for})`).join(', ')}; install with: apt-get install ${packages.join(' ')}` };
}
