/**
 * What must hold after any crash and restart: a healthy database, no operation left running,
 * and database, unit files, mounts, directories, accounts and layers agreeing.
 */
import Database from 'better-sqlite3';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Sandbox } from './sandbox.js';

export async function checkInvariants(opts: { dbPath: string; dataDir: string; runDir: string; sandbox: Sandbox }): Promise<string[]> {
  const problems: string[] = [];
  const db = new Database(opts.dbPath, { readonly: true });
  try {
    const integrity = db.pragma('integrity_check', { simple: true });
    if (integrity !== 'ok') problems.push(`integrity_check: ${String(integrity)}`);
    const running = db.prepare("SELECT id, kind FROM operations WHERE state IN ('pending','running')").all();
    if (running.length) problems.push(`operations left running: ${JSON.stringify(running)}`);
    const rows = db.prepare('SELECT id, uid, layerList FROM services').all() as { id: string; uid: number; layerList: string }[];
    const ids = new Set(rows.map((r) => r.id));
    const layers = new Set((db.prepare('SELECT digest FROM layers').all() as { digest: string }[]).map((r) => r.digest));
    const uids = rows.map((r) => r.uid);
    if (new Set(uids).size !== uids.length) problems.push(`a uid is used twice: ${uids.join(',')}`);
    for (const r of rows) {
      if (!existsSync(join(opts.sandbox.unitDir, `smd-${r.id}.service`))) problems.push(`${r.id}: no unit file`);
      if (!existsSync(join(opts.dataDir, 'services', r.id))) problems.push(`${r.id}: no service directory`);
      if ((await opts.sandbox.exec('getent', ['passwd', `smd-${r.uid}`])).code !== 0) problems.push(`${r.id}: no account smd-${r.uid}`);
      for (const d of JSON.parse(r.layerList) as string[]) {
        if (!layers.has(d)) problems.push(`${r.id}: layer ${d} not recorded`);
        if (!existsSync(join(opts.dataDir, 'layers/sha256', d.slice(7)))) problems.push(`${r.id}: layer ${d} not on disk`);
      }
    }
    for (const f of readdirSync(opts.sandbox.unitDir).filter((f) => /^smd-.*\.service$/.test(f))) {
      if (!ids.has(f.slice(4, -8))) problems.push(`unit file without a row: ${f}`);
    }
    const servicesDir = join(opts.dataDir, 'services');
    for (const name of existsSync(servicesDir) ? readdirSync(servicesDir) : []) if (!ids.has(name)) problems.push(`service directory without a row: ${name}`);
    const layerDir = join(opts.dataDir, 'layers/sha256');
    for (const name of existsSync(layerDir) ? readdirSync(layerDir) : []) if (!layers.has(`sha256:${name}`)) problems.push(`layer directory without a row: ${name}`);
    const mountinfo = await opts.sandbox.run('cat', ['/proc/self/mountinfo']);
    const prefix = join(opts.runDir, 'services') + '/';
    for (const line of mountinfo.split('\n')) {
      const mp = line.split(' ')[4];
      if (mp?.startsWith(prefix) && !ids.has(mp.slice(prefix.length).split('/')[0]!)) problems.push(`mount without a row: ${mp}`);
    }
  } finally {
    db.close();
  }
  return problems;
}
