import cliProgress from 'cli-progress';
import type { RpcClient } from './client.js';

interface OperationView {
  id: string;
  kind: string;
  state: string;
  progress: number;
  step: string | null;
  error: { code: string; message: string } | null;
  transfer?: { bytesDone: number; bytesTotal: number };
}

/** `12.3/50.0 MB` for a download in progress, else nothing. */
export function transferText(t: OperationView['transfer']): string {
  if (!t) return '';
  const mb = (n: number) => (n / 1e6).toFixed(1);
  return ` ${mb(t.bytesDone)}/${mb(t.bytesTotal)} MB`;
}

/**
 * Waits for an operation to finish, drawing a progress bar on a terminal (stderr) from the
 * `operation` events; without a terminal it waits silently.
 */
export async function followOperation(client: RpcClient, op: OperationView, opts: { tty: boolean; timeoutMs?: number }): Promise<OperationView> {
  if (op.state === 'succeeded' || op.state === 'failed') return op;
  const bar = opts.tty ? new cliProgress.SingleBar({ format: `${op.kind} [{bar}] {percentage}% {step}{bytes}`, hideCursor: true, stream: process.stderr }, cliProgress.Presets.shades_classic) : null;
  bar?.start(100, op.progress, { step: op.step ?? '', bytes: transferText(op.transfer) });
  const off = client.onNotification((method, params) => {
    const ev = params as { topic?: string } & Partial<OperationView>;
    if (method === 'event' && ev.topic === 'operation' && ev.id === op.id) bar?.update(ev.progress ?? 0, { step: ev.step ?? '', bytes: transferText(ev.transfer) });
  });
  try {
    if (bar) await client.call('events.subscribe', { topics: ['operation'] });
    // operations.wait is bounded on the server; loop until finished or our own timeout passes.
    const deadline = opts.timeoutMs !== undefined ? Date.now() + opts.timeoutMs : Infinity;
    let current = op;
    while (current.state !== 'succeeded' && current.state !== 'failed') {
      const left = deadline - Date.now();
      if (left <= 0) break;
      current = await client.call<OperationView>('operations.wait', { id: op.id, timeoutMs: Math.min(left, 60_000) });
    }
    if (current.state === 'succeeded') bar?.update(100, { step: 'done', bytes: '' });
    return current;
  } finally {
    off();
    bar?.stop();
  }
}
