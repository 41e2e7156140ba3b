import { createRequire } from 'node:module';
import type { Logger } from '../log.js';

/**
 * sd_notify over the datagram socket systemd names in NOTIFY_SOCKET.
 *
 * Not the `systemd-notify` npm package: it spawns the systemd-notify binary for every message
 * (about 15 ms each), has no watchdog support and, run by a non-root service, needs
 * NotifyAccess=all because the sender is a child process. Node has no AF_UNIX datagram
 * sockets, so this uses the small `unix-dgram` addon and sends from smd's own PID.
 */
export interface Notifier {
  readonly enabled: boolean;
  /** Microseconds of WatchdogSec= when systemd asked for keep-alives, else null. */
  readonly watchdogUsec: number | null;
  send(state: Record<string, string | number>): void;
  close(): void;
}

interface DgramSocket {
  on(event: 'error', fn: (err: Error) => void): void;
  send(buf: Buffer, offset: number, length: number, path: string, cb?: (err?: Error) => void): void;
  close(): void;
}

export function createNotifier(logger: Logger, env: NodeJS.ProcessEnv = process.env): Notifier {
  const path = env.NOTIFY_SOCKET;
  const watchdogUsec = parseWatchdog(env);
  if (!path) return { enabled: false, watchdogUsec, send: () => {}, close: () => {} };
  if (path.startsWith('@')) {
    logger.warn('abstract NOTIFY_SOCKET is not supported; readiness will not be reported', { path });
    return { enabled: false, watchdogUsec, send: () => {}, close: () => {} };
  }
  const unixDgram = createRequire(import.meta.url)('unix-dgram') as { createSocket(type: 'unix_dgram'): DgramSocket };
  const socket = unixDgram.createSocket('unix_dgram');
  socket.on('error', (err) => logger.warn('sd_notify failed', { err }));
  return {
    enabled: true,
    watchdogUsec,
    send(state) {
      const text = Object.entries(state)
        .map(([k, v]) => `${k}=${String(v).replace(/\n/g, ' ')}`)
        .join('\n');
      const buf = Buffer.from(text);
      socket.send(buf, 0, buf.length, path);
    },
    close: () => socket.close(),
  };
}

/** WATCHDOG_USEC applies only when WATCHDOG_PID is unset or names this process. */
function parseWatchdog(env: NodeJS.ProcessEnv): number | null {
  const usec = Number(env.WATCHDOG_USEC);
  if (!Number.isFinite(usec) || usec <= 0) return null;
  if (env.WATCHDOG_PID && Number(env.WATCHDOG_PID) !== process.pid) return null;
  return usec;
}
