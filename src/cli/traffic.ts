import { globals, out, program, withClient } from './common.js';
import { bytes, table, time } from './format.js';

interface Row {
  chain: string;
  serviceId: string | null;
  direction: 'in' | 'out';
  bytes: number;
  limit: number | null;
  blocked: boolean;
  /** Packets the service's network policy dropped (absent from daemons before it). */
  dropped?: number;
  periodStart: number;
}

/** Human table of traffic rows: one line per chain with readable units. */
export function renderTraffic(rows: Row[]): string {
  return table(
    rows.map((r) => ({
      service: r.serviceId ?? '(system)',
      direction: r.direction === 'in' ? 'in (download)' : 'out (upload)',
      bytes: bytes(r.bytes),
      limit: r.limit === null ? '-' : bytes(r.limit),
      blocked: r.blocked ? 'BLOCKED' : '',
      dropped: r.serviceId === null || r.dropped === undefined ? '-' : `${r.dropped} pkt`,
      since: time(r.periodStart),
      chain: r.chain,
    })),
    ['service', 'direction', 'bytes', 'limit', 'blocked', 'dropped', 'since', 'chain'],
  );
}

/** Adds `smctl traffic [serviceId] [--watch]` to the program. */
export function registerTrafficCommands(): void {
  program
    .command('traffic [serviceId]')
    .description('traffic of the current period per service and direction (--watch: follow the samples)')
    .option('-w, --watch', 'print again at every sample until Ctrl-C', false)
    .action((serviceId: string | undefined, o: { watch: boolean }) =>
      withClient(async (c) => {
        const params = serviceId ? { serviceId } : {};
        const show = (rows: Row[]) => {
          if (o.watch && !globals().json) process.stdout.write(`-- ${new Date().toISOString()}\n`);
          out(rows, () => renderTraffic(rows));
        };
        show(await c.call<Row[]>('traffic.get', params));
        if (!o.watch) return;
        c.onNotification((method, p) => {
          const ev = p as { topic?: string; samples?: Row[]; kind?: string };
          if (method !== 'event' || ev.topic !== 'traffic' || ev.kind !== undefined || !Array.isArray(ev.samples)) return;
          show(serviceId ? ev.samples.filter((r) => r.serviceId === serviceId) : ev.samples);
        });
        await c.call('events.subscribe', { topics: ['traffic'] });
        await new Promise<void>((resolve) => process.once('SIGINT', resolve));
      }),
    );
}
