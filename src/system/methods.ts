import * as z from 'zod';
import { eq } from 'drizzle-orm';
import type { OpenedDatabase } from '../db/database.js';
import { config } from '../db/schema.js';
import { describeTable, listTables } from '../db/introspect.js';
import { SmError } from '../errors.js';
import type { EventBus } from '../events/bus.js';
import { defineMethod, noParams, type MethodRegistry, type MethodSpec } from '../rpc/registry.js';
import type { TrustSummary } from '../trust/policy.js';
import type { Health } from './health.js';

export interface SystemInfoSource {
  name: string;
  version: string;
  startedAt: number;
  /** The image trust policy in force and its key ids (SPEC 13). */
  trust?: () => TrustSummary;
}

export function systemMethods(database: OpenedDatabase, bus: EventBus, health: Health, info: SystemInfoSource, registry: MethodRegistry): MethodSpec<any, any>[] {
  const { db, sqlite } = database;
  const configRow = () => db.select().from(config).get()!;
  // system.info is the call clients poll. Every read transaction costs about 5 us in WAL mode,
  // so its counts are cached and dropped whenever something may have changed them: services and
  // layers only change inside operations (which publish on every state change) and the version
  // only through system.setVersion below.
  const infoQuery = sqlite.prepare<[], { systemVersion: number | null; servicesCount: number; layersCount: number }>(
    'SELECT (SELECT version FROM config LIMIT 1) AS systemVersion, (SELECT count(*) FROM services) AS servicesCount, (SELECT count(*) FROM layers) AS layersCount',
  );
  let counts: ReturnType<typeof infoQuery.get> | null = null;
  const invalidate = () => (counts = null);
  bus.subscribe('operation', invalidate);
  bus.subscribe('service', invalidate);

  return [
    defineMethod({
      name: 'system.info',
      summary: 'What this smd is and how long it has been up',
      params: noParams,
      mutating: false,
      handler: () => ({
        name: info.name,
        version: info.version,
        pid: process.pid,
        startedAt: info.startedAt,
        uptimeMs: Date.now() - info.startedAt,
        dbSchemaVersion: database.schemaVersion,
        ...(counts ??= infoQuery.get()!),
        ...(info.trust ? { trust: info.trust() } : {}),
      }),
    }),
    defineMethod({
      name: 'system.health',
      summary: 'Health of the database, systemd connection, traffic accounting and journal',
      params: noParams,
      mutating: false,
      handler: () => health.report(),
    }),
    defineMethod({
      name: 'system.setVersion',
      summary: 'Record the OS version that layer packages are checked against',
      params: z.strictObject({ version: z.number().int().nonnegative(), expectedRowVersion: z.number().int().positive().optional() }),
      mutating: true,
      handler: (p) => {
        const row = configRow();
        if (p.expectedRowVersion !== undefined && p.expectedRowVersion !== row.rowVersion) {
          throw new SmError('CONFLICT', `config changed meanwhile (rowVersion ${row.rowVersion}, expected ${p.expectedRowVersion})`, { rowVersion: row.rowVersion });
        }
        if (row.version !== p.version) {
          db.update(config)
            .set({ version: p.version, updatedAt: Date.now(), rowVersion: row.rowVersion + 1 })
            .where(eq(config.rowVersion, row.rowVersion))
            .run();
          invalidate();
        }
        return { version: p.version };
      },
    }),
    defineMethod({
      name: 'db.tables',
      summary: 'Tables of the database with their row counts',
      params: noParams,
      mutating: false,
      handler: () => listTables(sqlite),
    }),
    defineMethod({
      name: 'db.describe',
      summary: 'Columns (types, defaults), indexes and foreign keys of one table',
      params: z.strictObject({ table: z.string().min(1) }),
      mutating: false,
      handler: (p) => describeTable(sqlite, p.table),
    }),
    defineMethod({
      name: 'rpc.discover',
      summary: 'The OpenRPC document of every method, generated from the schemas that validate them',
      params: noParams,
      mutating: false,
      handler: () => registry.openrpc({ title: info.name, version: info.version }),
    }),
  ];
}
