import { globals, program, withClient } from './common.js';

/** `smctl metrics`: the Prometheus text of `metrics.get`, as a scrape would see it. */
export function registerMetricsCommands(): void {
  program
    .command('metrics')
    .description('smd figures in the Prometheus text exposition format (metrics.get)')
    .option('--fresh', 'take a monitoring sample first instead of printing the last one', false)
    .action((o: { fresh: boolean }) =>
      withClient(async (c) => {
        const r = await c.call<{ text: string; contentType: string; sampledAt: number | null }>('metrics.get', { fresh: o.fresh });
        process.stdout.write(globals().json ? JSON.stringify(r, null, 2) + '\n' : r.text);
      }),
    );
}
