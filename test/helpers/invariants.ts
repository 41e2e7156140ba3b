/**
 * What must hold after any crash and restart: a healthy database, no operation left running,
 * and database, unit files, mounts, directories, accounts and layers agreeing.
 * One implementation, shared with scripts/stress/crash.mjs: scripts/stress/lib/invariants.mjs.
 */
import { checkInvariants as check } from '../../scripts/stress/lib/invariants.mjs';
import type { Sandbox } from './sandbox.js';

export async function checkInvariants(opts: { dbPath: string; dataDir: string; runDir: string; sandbox: Sandbox }): Promise<string[]> {
  return check(opts);
}
