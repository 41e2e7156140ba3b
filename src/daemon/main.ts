#!/usr/bin/env -S node --max-semi-space-size=1 --optimize-for-size
import { parseArgs } from 'node:util';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { loadConfig } from '../config/config.js';
import { createLogger } from '../log.js';
import { Daemon, PACKAGE_VERSION } from './app.js';
import { createNotifier } from './notify.js';

/** Longest event-loop stall (ms) after which smd stops feeding the watchdog. */
const MAX_LOOP_DELAY_MS = 5_000;

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({ options: { config: { type: 'string', short: 'c' }, version: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } }).values;
  } catch (err) {
    process.stderr.write(`smd: ${(err as Error).message}\n`);
    return 2;
  }
  if (args.help) {
    process.stdout.write('usage: smd [--config FILE]   (default /etc/smd/smd.json)\n');
    return 0;
  }
  if (args.version) {
    process.stdout.write(`${PACKAGE_VERSION}\n`);
    return 0;
  }

  let config;
  try {
    config = loadConfig(args.config);
  } catch (err) {
    process.stderr.write(`smd: ${(err as Error).message}\n`);
    return 2;
  }
  const logger = createLogger(config.logLevel);
  const notifier = createNotifier(logger);
  const daemon = new Daemon(config, logger);
  try {
    await daemon.start();
  } catch (err) {
    process.stderr.write(`smd: ${(err as Error).message}\n`);
    await daemon.stop(0).catch((stopErr: unknown) => logger.error('clean-up after the failed start failed', { err: stopErr }));
    return 1;
  }
  notifier.send({ READY: 1, STATUS: daemon.statusLine() });
  daemon.startBackgroundWork();

  const loopDelay = monitorEventLoopDelay({ resolution: 50 });
  loopDelay.enable();
  const timers: NodeJS.Timeout[] = [setInterval(() => notifier.send({ STATUS: daemon.statusLine() }), 10_000)];
  if (notifier.watchdogUsec) {
    timers.push(
      setInterval(() => {
        // The tick itself proves the loop runs; also require no long stall and a live database.
        const stalledMs = loopDelay.max / 1e6;
        loopDelay.reset();
        if (stalledMs > MAX_LOOP_DELAY_MS) return logger.warn('event loop stalled; withholding watchdog', { stalledMs });
        daemon.database.sqlite.prepare('SELECT 1').get();
        notifier.send({ WATCHDOG: 1 });
      }, Math.max(100, notifier.watchdogUsec / 2000)),
    );
  }
  for (const t of timers) t.unref();

  return new Promise<number>((resolve) => {
    const shutdown = (signal: string) => {
      logger.info('stopping', { signal });
      notifier.send({ STOPPING: 1, STATUS: `stopping (${signal})` });
      for (const t of timers) clearInterval(t);
      daemon.stop().then(
        () => resolve(0),
        (err) => {
          logger.error('shutdown failed', { err });
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGINT', () => shutdown('SIGINT'));
  });
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`smd: fatal: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
