import type Database from 'better-sqlite3';
import { notFound } from '../errors.js';

export interface TableSummary {
  name: string;
  rows: number;
}

export interface TableDescription {
  name: string;
  rows: number;
  columns: { name: string; type: string; notNull: boolean; default: string | null; primaryKey: boolean }[];
  indexes: { name: string; unique: boolean; columns: string[] }[];
  foreignKeys: { column: string; references: string; onDelete: string }[];
}

/** Tables of the schema, without SQLite's and drizzle's own bookkeeping. */
export function listTables(sqlite: Database.Database): TableSummary[] {
  const names = sqlite
    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '\\_\\_%' ESCAPE '\\' ORDER BY name")
    .pluck()
    .all() as string[];
  return names.map((name) => ({ name, rows: countRows(sqlite, name) }));
}

export function describeTable(sqlite: Database.Database, table: string): TableDescription {
  if (!listTables(sqlite).some((t) => t.name === table)) throw notFound(`table ${table}`, { table });
  const q = quoteIdent(table);
  const columns = (sqlite.prepare(`PRAGMA table_info(${q})`).all() as { name: string; type: string; notnull: number; dflt_value: string | null; pk: number }[]).map((c) => ({
    name: c.name,
    type: c.type.toUpperCase(),
    notNull: c.notnull === 1,
    default: c.dflt_value,
    primaryKey: c.pk > 0,
  }));
  const indexes = (sqlite.prepare(`PRAGMA index_list(${q})`).all() as { name: string; unique: number }[]).map((i) => ({
    name: i.name,
    unique: i.unique === 1,
    columns: (sqlite.prepare(`PRAGMA index_info(${quoteIdent(i.name)})`).all() as { name: string }[]).map((c) => c.name),
  }));
  const foreignKeys = (sqlite.prepare(`PRAGMA foreign_key_list(${q})`).all() as { from: string; table: string; to: string; on_delete: string }[]).map((f) => ({
    column: f.from,
    references: `${f.table}.${f.to}`,
    onDelete: f.on_delete,
  }));
  return { name: table, rows: countRows(sqlite, table), columns, indexes, foreignKeys };
}

function countRows(sqlite: Database.Database, table: string): number {
  return (sqlite.prepare(`SELECT count(*) AS n FROM ${quoteIdent(table)}`).get() as { n: number }).n;
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
