import { Option } from 'commander';
import { EXIT, globals, out, program, withClient } from './common.js';
import { bytes, table, time } from './format.js';
import type { Alert } from '../alerts/store.js';
import type { MonitoringSnapshot } from '../monitoring/monitor.js';

const b = (n: number | null | undefined) => (n === null || n === undefined ? '-' : bytes(n));
const ofLimit = (used: number | null, limit: number | null, exact = true) => `${b(used)}${exact ? '' : '+'}${limit ? ` / ${bytes(limit)}` : ''}`;
const pct = (n: number | null) => (n === null ? '-' : `${n.toFixed(1)}%`);

function render(s: MonitoringSnapshot): string {
  const d = s.device;
  const head = `device  cpu ${pct(d.cpu)}  memory ${d.memory ? `${bytes(d.memory.usedBytes)} / ${bytes(d.memory.totalBytes)}` : '-'}  disk ${d.disk ? `${bytes(d.disk.usedBytes)} / ${bytes(d.disk.totalBytes)} (${d.disk.path})` : '-'}  sampled ${time(s.sampledAt)}`;
  const rows = s.services.map((u) => ({ id: u.serviceId, state: u.activeState ?? '-', cpu: pct(u.cpu), memory: b(u.memory), tasks: u.tasks ?? '-', storage: ofLimit(u.storage.usedBytes, u.storage.limitBytes, u.storage.exact), state_file: ofLimit(u.state.usedBytes, u.state.limitBytes) }));
  return `${head}\n\n${table(rows, ['id', 'state', 'cpu', 'memory', 'tasks', 'storage', 'state_file'])}`;
}

export function registerMonitoringCommands(): void {
  program
    .command('monitor [serviceId]')
    .description('resource use of the services and the device (cpu, memory, tasks, storage, state)')
    .addOption(new Option('-w, --watch', 'refresh until Ctrl-C'))
    .option('--interval <ms>', 'refresh interval with --watch', (v) => Number.parseInt(v, 10), 2000)
    .action((serviceId: string | undefined, o: { watch?: boolean; interval: number }) =>
      withClient(async (c) => {
        const params = serviceId ? { serviceId } : {};
        const show = async (fresh: boolean) => {
          const s = await c.call<MonitoringSnapshot>('monitoring.get', { ...params, fresh });
          if (o.watch && !globals().json && process.stdout.isTTY) process.stdout.write('\x1b[H\x1b[2J');
          out(s, () => render(s));
        };
        await show(true);
        if (!o.watch) return;
        let stop = false;
        process.once('SIGINT', () => (stop = true));
        while (!stop) {
          await new Promise((r) => setTimeout(r, o.interval));
          if (!stop) await show(false);
        }
        process.exitCode = EXIT.ok;
      }),
    );
  program
    .command('alerts')
    .description('alerts from monitoring rules and the services\' journal')
    .option('--service <id>', 'only this service')
    .option('--since <ms>', 'only alerts at or after this time (ms since the epoch, or a negative offset like -3600000)', (v) => Number.parseInt(v, 10))
    .addOption(new Option('--source <source>', 'only this source').choices(['monitoring', 'journal']))
    .action((o: { service?: string; since?: number; source?: string }) =>
      withClient(async (c) => {
        const since = o.since !== undefined && o.since < 0 ? Date.now() + o.since : o.since;
        const list = await c.call<Alert[]>('alerts.list', { ...(o.service ? { serviceId: o.service } : {}), ...(since !== undefined ? { since } : {}), ...(o.source ? { source: o.source } : {}) });
        out(list, () => table(list.map((a) => ({ ...a, time: time(a.time), service: a.serviceId ?? '-' })), ['id', 'time', 'source', 'service', 'kind', 'message']));
      }),
    );
}
