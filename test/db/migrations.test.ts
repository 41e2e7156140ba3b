/**
 * A database created by the first migration (the original design's five tables, as deployed
 * devices have them) is upgraded by every later migration without losing a row.
 * Keep this test growing: add rows for each new migration's tables.
 */
import t from 'tap';
import Database from 'better-sqlite3';
import { cpSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { MIGRATIONS_DIR, applyMigrations, openDatabase } from '../../src/db/database.js';

function scratch(t: Tap.Test) {
  const dir = mkdtempSync(join(tmpdir(), 'smd-mig-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
declare namespace Tap { type Test = { teardown(fn: () => void): void } }

/** A migrations folder holding only the first `n` migrations of the real one. */
function firstMigrations(dir: string, n: number): string {
  const out = join(dir, 'migrations');
  mkdirSync(join(out, 'meta'), { recursive: true });
  const journal = JSON.parse(readFileSync(join(MIGRATIONS_DIR, 'meta/_journal.json'), 'utf8')) as { entries: { tag: string }[] };
  const kept = journal.entries.slice(0, n);
  for (const e of kept) cpSync(join(MIGRATIONS_DIR, `${e.tag}.sql`), join(out, `${e.tag}.sql`));
  writeFileSync(join(out, 'meta/_journal.json'), JSON.stringify({ ...journal, entries: kept }));
  return out;
}

t.test('the original schema upgrades to the current one with every row kept', async (t) => {
  const dir = scratch(t);
  const path = join(dir, 'smd.db');
  const old = new Database(path);
  applyMigrations(old, firstMigrations(dir, 1));
  old.prepare('INSERT INTO config (version, cursor) VALUES (7, ?)').run('s=abc;i=1');
  old.prepare('INSERT INTO services (id, version, serviceProvider, layerList, state, status, startat, ttl, ulLimit, dlLimit) VALUES (?,?,?,?,?,?,?,?,?,?)').run('svc-a', 3, 'acme', '["sha256:aa"]', 1, 0, 1700000000000, 30, 1000, 2000);
  old.prepare('INSERT INTO users (users, serviceid, storageFolder, stateCheckSum) VALUES (?,?,?,?)').run('["driver-42"]', 'svc-a', '/data/x', Buffer.from('abcd', 'hex'));
  old.prepare('INSERT INTO trafficmonitor (chain, time, value) VALUES (?,?,?)').run('SMD_SYSTEM_IN', 1700000000000, 9007199254740991);
  old.prepare('INSERT INTO layers (digest, layerId, path, osVersion) VALUES (?,?,?,?)').run('sha256:aa', 'base', '/layers/aa', '7');
  old.close();

  const opened = openDatabase(path);
  t.teardown(() => opened.close());
  const total = readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith('.sql')).length;
  t.equal(opened.schemaVersion, total, 'every migration applied');
  const db = opened.sqlite;
  t.match(db.prepare('SELECT * FROM config').all(), [{ version: 7, cursor: 's=abc;i=1', rowVersion: 1, currentUsers: '[]' }]);
  t.match(db.prepare('SELECT * FROM services').all(), [{ id: 'svc-a', version: 3, serviceProvider: 'acme', layerList: '["sha256:aa"]', state: 1, startat: 1700000000000, ttl: 30, ulLimit: 1000, dlLimit: 2000, rowVersion: 1, desired: 'running' }]);
  const users = db.prepare('SELECT * FROM users').all() as { stateCheckSum: Buffer }[];
  t.equal(users.length, 1);
  t.same(users[0]!.stateCheckSum, Buffer.from('abcd', 'hex'));
  t.match(db.prepare('SELECT * FROM trafficmonitor').all(), [{ chain: 'SMD_SYSTEM_IN', value: 9007199254740991, counter: null }]);
  t.match(db.prepare('SELECT * FROM layers').all(), [{ digest: 'sha256:aa', layerId: 'base', osVersion: '7', size: 0 }]);
  t.same(db.prepare('SELECT * FROM service_networks').all(), [], 'tables added later exist');
  t.equal(db.pragma('foreign_keys', { simple: true }), 1, 'foreign keys are on after migrating');
  t.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  t.equal(db.pragma('synchronous', { simple: true }), 2, 'synchronous=FULL');
});

t.test('opening twice applies nothing twice and keeps one config row', async (t) => {
  const path = join(scratch(t), 'smd.db');
  openDatabase(path).close();
  const again = openDatabase(path);
  t.teardown(() => again.close());
  t.equal((again.sqlite.prepare('SELECT count(*) AS n FROM config').get() as { n: number }).n, 1);
});

t.test('a file that is not a database is refused and left untouched', async (t) => {
  const path = join(scratch(t), 'smd.db');
  const garbage = Buffer.alloc(8192, 0x5a);
  writeFileSync(path, garbage);
  t.throws(() => openDatabase(path), /unusable|not a database/);
  t.same(readFileSync(path), garbage);
});
