// What must hold after any crash and restart of smd: a healthy database, no operation left
// running, and database, unit files, mounts, directories, accounts, layers, network namespaces
// and iptables chains agreeing. Shared by test/helpers/invariants.ts and scripts/stress/crash.mjs.
//
// `sandbox` is anything with `unitDir`, `exec(cmd, args) -> {code, stdout, stderr}` and
// `run(cmd, args) -> stdout` that runs commands inside the sandbox's namespaces (the test helper's
// Sandbox, or `localSandbox()` when this process already runs inside).
import Database from 'better-sqlite3';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** A sandbox view for a process that already runs inside scripts/sandbox. */
export function localSandbox(unitDir = process.env.SMD_SANDBOX_UNIT_DIR) {
  const exec = (cmd, args = [], o = {}) =>
    new Promise((res) => {
      execFile(cmd, args, { timeout: o.timeoutMs ?? 20_000, encoding: 'utf8', maxBuffer: 32 << 20 }, (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        res({ stdout, stderr, code });
      });
    });
  return {
    unitDir,
    exec,
    async run(cmd, args = [], o = {}) {
      const r = await exec(cmd, args, o);
      if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
      return r.stdout;
    },
  };
}

/** The checks crash.test.ts has always made (behaviour kept exactly). */
export async function checkInvariants(opts) {
  const problems = [];
  const db = new Database(opts.dbPath, { readonly: true });
  try {
    const integrity = db.pragma('integrity_check', { simple: true });
    if (integrity !== 'ok') problems.push(`integrity_check: ${String(integrity)}`);
    const running = db.prepare("SELECT id, kind FROM operations WHERE state IN ('pending','running')").all();
    if (running.length) problems.push(`operations left running: ${JSON.stringify(running)}`);
    const rows = db.prepare('SELECT id, uid, layerList FROM services').all();
    const ids = new Set(rows.map((r) => r.id));
    const layers = new Set(db.prepare('SELECT digest FROM layers').all().map((r) => r.digest));
    const uids = rows.map((r) => r.uid);
    if (new Set(uids).size !== uids.length) problems.push(`a uid is used twice: ${uids.join(',')}`);
    for (const r of rows) {
      if (!existsSync(join(opts.sandbox.unitDir, `smd-${r.id}.service`))) problems.push(`${r.id}: no unit file`);
      if (!existsSync(join(opts.dataDir, 'services', r.id))) problems.push(`${r.id}: no service directory`);
      if ((await opts.sandbox.exec('getent', ['passwd', `smd-${r.uid}`])).code !== 0) problems.push(`${r.id}: no account smd-${r.uid}`);
      for (const d of JSON.parse(r.layerList)) {
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
      if (mp?.startsWith(prefix) && !ids.has(mp.slice(prefix.length).split('/')[0])) problems.push(`mount without a row: ${mp}`);
    }
  } finally {
    db.close();
  }
  return problems;
}

const shortHash = (id, n = 10) => createHash('sha256').update(id, 'utf8').digest('hex').slice(0, n);
/** Same rule as src/services/layout.ts usersKey(). */
const usersKeyOf = (canonical) => createHash('sha256').update(canonical).digest('hex').slice(0, 16);

/**
 * Stricter agreement checks for the crash stress run: no account, storage folder, network
 * namespace or iptables chain without a row; every service of the current users that should
 * run has its root mounted and its storage folder. `live` (optional): {unitId: activeState}.
 */
export async function checkExtraInvariants(opts) {
  const problems = [];
  const db = new Database(opts.dbPath, { readonly: true });
  try {
    const rows = db.prepare('SELECT id, uid, desired FROM services').all();
    const ids = new Set(rows.map((r) => r.id));
    const uids = new Set(rows.map((r) => r.uid));
    const current = db.prepare('SELECT currentUsers FROM config').get()?.currentUsers ?? '[]';
    const attached = new Set(db.prepare('SELECT serviceid FROM users WHERE users = ?').all(current).map((r) => r.serviceid));
    const userRows = db.prepare('SELECT users, serviceid FROM users').all();
    for (const u of userRows) if (!ids.has(u.serviceid)) problems.push(`users row without a service: ${u.users} ${u.serviceid}`);
    // Accounts: smd-<uid> in the (sandbox's private) passwd for a uid no row holds.
    const passwd = (await opts.sandbox.run('cat', ['/etc/passwd'])).split('\n');
    for (const line of passwd) {
      const m = /^smd-(\d+):x:(\d+):/.exec(line);
      if (m && !uids.has(Number(m[2]))) problems.push(`account without a row: smd-${m[1]}`);
    }
    // Storage folders <dataDir>/storage/<key>/<id>
    const storage = join(opts.dataDir, 'storage');
    for (const key of existsSync(storage) ? readdirSync(storage) : []) {
      for (const id of readdirSync(join(storage, key))) if (!ids.has(id)) problems.push(`storage folder without a row: storage/${key}/${id}`);
    }
    const mountinfo = await opts.sandbox.run('cat', ['/proc/self/mountinfo']);
    const mounted = new Set(mountinfo.split('\n').map((l) => l.split(' ')[4]).filter(Boolean));
    const key = usersKeyOf(current);
    for (const r of rows) {
      if (!attached.has(r.id) || r.desired !== 'running') continue;
      const root = join(opts.runDir, 'services', r.id, 'root');
      if (!mounted.has(root)) problems.push(`${r.id}: should run but its root is not mounted`);
      if (!existsSync(join(storage, key, r.id, 'data'))) problems.push(`${r.id}: should run but has no storage folder for ${current}`);
      if (opts.live && opts.live[r.id] !== undefined && opts.live[r.id] !== 'active') problems.push(`${r.id}: should run but is ${opts.live[r.id]}`);
    }
    if (opts.traffic) {
      const ns = (await opts.sandbox.exec('ip', ['netns', 'list'])).stdout.split('\n').map((l) => l.split(' ')[0]).filter((n) => /^smd-[0-9a-f]{10}$/.test(n));
      const wantNs = new Set([...ids].map((id) => `smd-${shortHash(id)}`));
      for (const n of ns) if (!wantNs.has(n)) problems.push(`network namespace without a row: ${n}`);
      const save = (await opts.sandbox.exec('iptables-save', ['-t', 'filter'])).stdout;
      const chains = [...save.matchAll(/^:(SMD_[0-9A-Za-z]+_(?:IN|OUT))\s/gm)].map((m) => m[1]);
      const wantChains = new Set(['SMD_SYSTEM_IN', 'SMD_SYSTEM_OUT', 'SMD_FORWARD_IN', 'SMD_FORWARD_OUT']);
      if (opts.chainName) for (const id of ids) for (const d of ['in', 'out']) wantChains.add(opts.chainName(id, d));
      for (const c of chains) if (!wantChains.has(c)) problems.push(`iptables chain without a row: ${c}`);
    }
  } finally {
    db.close();
  }
  return problems;
}

export function readJson(path) {
  return JSON.parse(readFileSync(path, 'utf8'));
}
