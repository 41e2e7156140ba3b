import Database from 'better-sqlite3';
import { drizzle, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as schema from './schema.js';
import { SmError } from '../errors.js';

export type Db = BetterSQLite3Database<typeof schema> & { $client: Database.Database };

export interface OpenedDatabase {
  db: Db;
  sqlite: Database.Database;
  /** Number of migrations applied: the schema version clients see in system.info. */
  schemaVersion: number;
  close(): void;
}

/** drizzle/ sits at the package root, two levels above src/db or dist/db. */
export const MIGRATIONS_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../drizzle');

/**
 * Opens (or creates) the database, applies pending migrations and sets the durability pragmas.
 * A file that is not a healthy SQLite database is refused, never overwritten.
 */
export function openDatabase(path: string, migrationsFolder = MIGRATIONS_DIR): OpenedDatabase {
  mkdirSync(dirname(path), { recursive: true });
  let sqlite: Database.Database;
  try {
    sqlite = new Database(path);
  } catch (err) {
    throw new SmError('INTERNAL', `cannot open database ${path}: ${(err as Error).message}`, { path }, { cause: err });
  }
  try {
    sqlite.pragma('busy_timeout = 5000');
    const check = sqlite.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new Error(`integrity check failed: ${String(check)}`);
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = FULL');
    applyMigrations(sqlite, migrationsFolder);
    sqlite.pragma('foreign_keys = ON');
  } catch (err) {
    sqlite.close();
    if (err instanceof SmError) throw err;
    throw new SmError('INTERNAL', `database ${path} is unusable: ${(err as Error).message}; refusing to start (the file was left as it is)`, { path }, { cause: err });
  }
  const db = drizzle(sqlite, { schema }) as Db;
  ensureConfigRow(sqlite);
  const schemaVersion = (sqlite.prepare('SELECT count(*) AS n FROM __drizzle_migrations').get() as { n: number }).n;
  return { db, sqlite, schemaVersion, close: () => sqlite.close() };
}

/**
 * drizzle-kit rebuilds tables it cannot ALTER with `PRAGMA foreign_keys=OFF` inside the
 * migration, which is a no-op within migrate()'s transaction, so ON DELETE CASCADE children
 * would be deleted. Turn foreign keys off on the connection first and check them after.
 */
export function applyMigrations(sqlite: Database.Database, migrationsFolder = MIGRATIONS_DIR): void {
  sqlite.pragma('foreign_keys = OFF');
  migrate(drizzle(sqlite), { migrationsFolder });
  const violations = sqlite.pragma('foreign_key_check') as unknown[];
  if (violations.length > 0) {
    throw new SmError('INTERNAL', `migrations left ${violations.length} foreign key violations`, { violations: violations.slice(0, 10) });
  }
}

function ensureConfigRow(sqlite: Database.Database): void {
  const now = Date.now();
  sqlite
    .prepare('INSERT INTO config (version, cursor, createdAt, updatedAt) SELECT NULL, NULL, ?, ? WHERE NOT EXISTS (SELECT 1 FROM config)')
    .run(now, now);
}
