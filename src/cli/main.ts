#!/usr/bin/env node
import { resolve as resolvePath } from 'node:path';
import { CommanderError, Option } from 'commander';
import { RpcCallError } from './client.js';
import { EXIT, Unreachable, globals, imageArgument, out, program, runOperation, withClient } from './common.js';
import { bytes, duration, keyValues, table, time } from './format.js';
import { followOperation } from './progress.js';
import { registerServiceCommands } from './services.js';
import { registerUserCommands } from './users.js';
import { registerTrafficCommands } from './traffic.js';
import { registerMonitoringCommands } from './monitoring.js';
import { registerStateCommands } from './state.js';
import { registerMetricsCommands } from './metrics.js';
import { registerFleetCommands } from './fleet.js';

const opColumns = ['id', 'kind', 'target', 'state', 'progress', 'step', 'updated'];
const opRow = (o: Record<string, unknown>) => ({ ...o, updated: time(o.updatedAt as number), progress: `${String(o.progress)}%` });

program
  .command('info')
  .description('what smd is running and since when')
  .action(() =>
    withClient(async (c) => {
      const info = await c.call<Record<string, unknown>>('system.info');
      const trust = info.trust as { policy: string; keys: { id: string }[] } | undefined;
      const trustLine = trust ? `${trust.policy}${trust.keys.length ? ` (keys: ${trust.keys.map((k) => k.id).join(', ')})` : ''}` : undefined;
      out(info, () => keyValues({ ...info, startedAt: time(info.startedAt as number), uptime: duration(info.uptimeMs as number), uptimeMs: undefined, trust: trustLine }));
    }),
  );

program
  .command('health')
  .description('health of database, systemd, traffic and journal (exit 1 when not ok)')
  .action(() =>
    withClient(async (c) => {
      const h = await c.call<{ ok: boolean; checks: Record<string, { ok: boolean; detail: string }> }>('system.health');
      out(h, () => `${h.ok ? 'ok' : 'NOT OK'}\n` + table(Object.entries(h.checks).map(([name, v]) => ({ check: name, ok: v.ok ? 'ok' : 'FAIL', detail: v.detail })), ['check', 'ok', 'detail']));
      if (!h.ok) process.exitCode = EXIT.failed;
    }),
  );

const ops = program.command('ops').description('operations: long actions and how they ended');
ops
  .command('ls', { isDefault: true })
  .description('recent operations')
  .addOption(new Option('--state <state>', 'only this state').choices(['pending', 'running', 'succeeded', 'failed']))
  .action((o: { state?: string }) =>
    withClient(async (c) => {
      const list = await c.call<Record<string, unknown>[]>('operations.list', o.state ? { state: o.state } : {});
      out(list, () => table(list.map(opRow), opColumns));
    }),
  );
ops
  .command('get <id>')
  .description('one operation with its steps')
  .action((id: string) =>
    withClient(async (c) => {
      const op = await c.call<Record<string, unknown> & { steps: Record<string, unknown>[] }>('operations.get', { id });
      out(op, () => keyValues({ ...op, steps: undefined, createdAt: time(op.createdAt as number), updatedAt: time(op.updatedAt as number) }) + '\n\n' + table(op.steps.map((s) => ({ ...s, time: time(s.time as number) })), ['name', 'state', 'message', 'time']));
    }),
  );
ops
  .command('wait <id>')
  .description('wait until an operation has finished (exit 1 if it failed)')
  .option('--timeout <ms>', 'give up after this many milliseconds', (v) => Number.parseInt(v, 10))
  .action((id: string, o: { timeout?: number }) =>
    withClient(async (c) => {
      const op = await c.call<Parameters<typeof followOperation>[1]>('operations.get', { id });
      const done = await followOperation(c, op, { tty: process.stderr.isTTY === true && !globals().json, ...(o.timeout !== undefined ? { timeoutMs: o.timeout } : {}) });
      out(done, () => `${done.id} ${done.state}${done.error ? `: ${done.error.code}: ${done.error.message}` : ''}`);
      if (done.state !== 'succeeded') process.exitCode = EXIT.failed;
    }),
  );

program
  .command('events [topics...]')
  .description('print events as they happen (topics: service operation alert traffic users; default all)')
  .action((topics: string[]) =>
    withClient(async (c) => {
      const wanted = topics.length > 0 ? topics : ['service', 'operation', 'alert', 'traffic', 'users'];
      c.onNotification((method, params) => {
        if (method !== 'event') return;
        const ev = params as { topic: string } & Record<string, unknown>;
        const { topic, ...rest } = ev;
        process.stdout.write(globals().json ? JSON.stringify(ev) + '\n' : `${new Date().toISOString()} ${topic} ${JSON.stringify(rest)}\n`);
      });
      await c.call('events.subscribe', { topics: wanted });
      process.stderr.write(`listening for ${wanted.join(', ')} (Ctrl-C to stop)\n`);
      await new Promise<void>((resolve) => process.once('SIGINT', resolve));
    }),
  );

registerServiceCommands();
registerUserCommands();
registerTrafficCommands();
registerMonitoringCommands();
registerStateCommands();
registerMetricsCommands();
registerFleetCommands();

const layersCmd = program.command('layers').description('the shared layer store');
const layerRow = (l: Record<string, unknown>) => ({ ...l, digest: String(l.digest).slice(0, 19), size: bytes(l.size as number), usedBy: (l.usedBy as string[]).join(',') || '-', created: time(l.createdAt as number) });
layersCmd
  .command('ls', { isDefault: true })
  .description('installed layers and the services using them')
  .action(() =>
    withClient(async (c) => {
      const list = await c.call<Record<string, unknown>[]>('layers.list');
      out(list, () => table(list.map(layerRow), ['digest', 'layerId', 'osVersion', 'size', 'usedBy', 'created']));
    }),
  );
layersCmd
  .command('install <image>')
  .description('install the layers of a layer package (an archive, an https:// URL with --digest, or docker://)')
  .option('--digest <sha256:hex>', 'digest of the archive (required for a URL)')
  .option('--size <bytes>', 'size of the archive (for a URL)', (v) => Number.parseInt(v, 10))
  .option('--signature <file>', 'a sigstore bundle signing the package (a file on the device)')
  .action((image: string, o: { digest?: string; size?: number; signature?: string }) =>
    withClient((c) =>
      runOperation(c, 'layers.install', { image: imageArgument(image), ...(o.digest ? { digest: o.digest } : {}), ...(o.size !== undefined ? { size: o.size } : {}), ...(o.signature ? { signature: resolvePath(o.signature) } : {}) }),
    ),
  );
layersCmd
  .command('rm <digest>')
  .description('remove a layer (refused while a service uses it, unless --force)')
  .option('--force', 'remove even if in use', false)
  .action((digest: string, o: { force: boolean }) => withClient((c) => runOperation(c, 'layers.remove', { digest, force: o.force })));
layersCmd
  .command('prune')
  .description('remove every layer no service uses')
  .action(() => withClient((c) => runOperation(c, 'layers.prune', {})));

const dbCmd = program.command('db').description('read-only view of the database schema');
dbCmd
  .command('tables', { isDefault: true })
  .description('tables and row counts')
  .action(() =>
    withClient(async (c) => {
      const tables = await c.call<Record<string, unknown>[]>('db.tables');
      out(tables, () => table(tables, ['name', 'rows']));
    }),
  );
dbCmd
  .command('describe <table>')
  .description('columns, indexes and foreign keys of a table')
  .action((name: string) =>
    withClient(async (c) => {
      const d = await c.call<{ name: string; rows: number; columns: Record<string, unknown>[]; indexes: Record<string, unknown>[]; foreignKeys: Record<string, unknown>[] }>('db.describe', { table: name });
      out(d, () =>
        [
          `${d.name} (${d.rows} rows)`,
          table(d.columns.map((c) => ({ ...c, notNull: c.notNull ? 'yes' : '', primaryKey: c.primaryKey ? 'yes' : '' })), ['name', 'type', 'notNull', 'default', 'primaryKey']),
          d.indexes.length ? '\nindexes\n' + table(d.indexes.map((i) => ({ ...i, columns: (i.columns as string[]).join(',') })), ['name', 'unique', 'columns']) : '',
          d.foreignKeys.length ? '\nforeign keys\n' + table(d.foreignKeys, ['column', 'references', 'onDelete']) : '',
        ]
          .filter(Boolean)
          .join('\n'),
      );
    }),
  );


async function main(): Promise<number> {
  try {
    await program.parseAsync(process.argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    if (err instanceof Unreachable) {
      process.stderr.write(`smctl: ${err.message}\n`);
      return EXIT.unreachable;
    }
    if (err instanceof RpcCallError) {
      if (globals().json) process.stdout.write(JSON.stringify({ error: { code: err.rpcCode, message: err.message, data: err.data } }, null, 2) + '\n');
      process.stderr.write(`smctl: ${err.code ? `${err.code}: ` : ''}${err.message}\n`);
      return EXIT.failed;
    }
    process.stderr.write(`smctl: ${(err as Error).message}\n`);
    return EXIT.failed;
  }
}

main().then((code) => process.exit(code));
