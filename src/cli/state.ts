import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve as resolvePath } from 'node:path';
import { EXIT, globals, out, program, withClient } from './common.js';
import { cell, table, time } from './format.js';
import { followOperation } from './progress.js';
import type { ItemResult } from '../state/plan.js';

interface ApplyOp {
  id: string;
  kind: string;
  state: string;
  progress: number;
  step: string | null;
  error: { code: string; message: string; details?: { items?: ItemResult[] } } | null;
  result: { version: number; unchanged?: boolean; items: ItemResult[] } | null;
}

const itemRow = (i: ItemResult) => ({ kind: i.kind, id: i.id, outcome: i.outcome, from: i.from ?? '-', to: i.to ?? '-', error: i.error ?? '' });
const itemColumns = ['kind', 'id', 'outcome', 'from', 'to', 'error'];

export function registerStateCommands(): void {
  program
    .command('apply <file>')
    .description('make the device match a desired state (JSON file: {version, services, layers}), all or nothing')
    .option('--force', 'apply even a lower version, or the same version with other content (also re-applies the same state)', false)
    .option('--no-wait', 'print the started operation and return')
    .action((file: string, o: { force: boolean; wait: boolean }) =>
      withClient(async (c) => {
        let desired: unknown;
        try {
          desired = JSON.parse(readFileSync(file === '-' ? 0 : file, 'utf8'));
        } catch (err) {
          throw new Error(`cannot read the desired state from ${file}: ${(err as Error).message}`);
        }
        if (file !== '-') resolveImages(desired, dirname(resolvePath(file)));
        const started = await c.call<ApplyOp>('state.apply', { desired, ...(o.force ? { force: true } : {}) });
        if (!o.wait) {
          out(started, () => `${started.kind} ${started.id} ${started.state}`);
          return;
        }
        const done = (await followOperation(c, started, { tty: process.stderr.isTTY === true && !globals().json })) as ApplyOp;
        const full = await c.call<ApplyOp>('operations.get', { id: done.id });
        const items = full.result?.items ?? full.error?.details?.items ?? [];
        out(full, () => {
          const head = `${full.kind} ${full.state}${full.result?.unchanged ? ' (unchanged)' : ''}${full.error ? `: ${full.error.code}: ${full.error.message}` : ''}`;
          return items.length > 0 ? `${head}\n${table(items.map(itemRow), itemColumns)}` : head;
        });
        if (full.state !== 'succeeded') process.exitCode = EXIT.failed;
      }),
    );

  program
    .command('state')
    .description('the desired state, how its last apply ended, and the drift from it')
    .action(() =>
      withClient(async (c) => {
        type View = {
          desired: { version: number; services: { id: string; version: number; image: string }[]; layers: { image: string }[] } | null;
          applied: { version: number; operationId: string; state: string; finishedAt: number | null; error: { code: string; message: string } | null } | null;
          lastSucceeded: { version: number; operationId: string } | null;
          drift: { kind: string; id: string; issue: string; expected: unknown; actual: unknown }[];
        };
        const v = await c.call<View>('state.get');
        out(v, () => {
          if (!v.desired || !v.applied) return 'no desired state applied yet';
          const a = v.applied;
          const lines = [
            `desired version ${v.desired.version}: ${a.state}${a.finishedAt ? ` at ${time(a.finishedAt)}` : ''} (operation ${a.operationId})${a.error ? `\n  ${a.error.code}: ${a.error.message}` : ''}`,
            ...(v.lastSucceeded ? [`last succeeded: version ${v.lastSucceeded.version} (operation ${v.lastSucceeded.operationId})`] : []),
            '',
            table(v.desired.services.map((s) => ({ service: s.id, version: s.version, image: s.image })), ['service', 'version', 'image']),
            ...(v.desired.layers.length > 0 ? ['', table(v.desired.layers.map((l) => ({ layer: l.image })), ['layer'])] : []),
            '',
            v.drift.length === 0 ? 'no drift' : 'drift\n' + table(v.drift.map((d) => ({ kind: d.kind, id: d.id, issue: d.issue, expected: cell(d.expected), actual: cell(d.actual) })), ['kind', 'id', 'issue', 'expected', 'actual']),
          ];
          return lines.join('\n');
        });
      }),
    );
}

/** Relative image paths in the file are taken relative to the file's directory (smd needs absolute ones). */
function resolveImages(desired: unknown, base: string): void {
  const d = desired as { services?: { image?: unknown }[]; layers?: { image?: unknown }[] } | null;
  for (const item of [...(Array.isArray(d?.services) ? d.services : []), ...(Array.isArray(d?.layers) ? d.layers : [])]) {
    if (typeof item?.image === 'string' && !item.image.includes('://') && !isAbsolute(item.image)) item.image = resolvePath(base, item.image);
  }
}
