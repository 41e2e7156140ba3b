/**
 * One real stack per test file for the services tests: a sandbox (systemd --user, D-Bus,
 * journald, namespaces), the example images and a daemon subscribed to service and operation
 * events. Nothing is shared between files.
 */
import { join } from 'node:path';
import type { RpcClient } from '../../src/cli/client.js';
import { buildExampleImages, ROOT, startDaemon, tempDir, type RunningDaemon } from './daemon.js';
import { startSandbox, type Sandbox } from './sandbox.js';

interface Tap {
  teardown(fn: () => unknown): void;
}

export interface Op {
  id: string;
  state: string;
  error: { code: string; message: string } | null;
  result: unknown;
}

export interface Svc {
  id: string;
  version: number;
  state: number;
  status: number;
  unit: string;
  uid: number;
  layers: string[];
  rowVersion: number;
  address?: string | null;
  live?: { activeState: string; subState: string; mainPid: number | null; restarts: number | null } | null;
}

/** services.state by name (SPEC section 4). */
export const STATE = { stopped: 0, running: 1, failed: 2 } as const;

export interface ServicesFixture {
  sb: Sandbox;
  d: RunningDaemon;
  c: RpcClient;
  img: Record<string, string>;
  /** Installs and waits; returns the finished operation. */
  install(params: Record<string, unknown>): Promise<Op>;
  /** GET the hello-http page at the service's own address on smd's bridge. */
  fetchPage(): Promise<string>;
  /** Resolves (bounded) with the first `service` event for `id` that satisfies `pred`. */
  serviceEvent(id: string, pred: (e: { state: number; status: number; activeState?: string }) => boolean, timeoutMs?: number): Promise<{ state: number; status: number; activeState?: string; at: number }>;
}

export async function servicesFixture(t: Tap, opts: { config?: Record<string, unknown> } = {}): Promise<ServicesFixture> {
  const sb = await startSandbox(t);
  const dir = tempDir(t);
  const img = buildExampleImages(join(dir, 'images')).byName;
  const d = await startDaemon(t, { dir, sandbox: sb, ...(opts.config ? { config: opts.config } : {}) });
  const c = await d.client();
  await c.call('events.subscribe', { topics: ['service', 'operation'] });
  return {
    sb,
    d,
    c,
    img,
    install: (params) => c.call<Op>('services.install', { ...params, wait: true }),
    async fetchPage() {
      const { address } = await c.call<{ address: string }>('services.get', { id: 'hello-http' });
      return sb.run(process.execPath, [join(ROOT, 'scripts/http-get.mjs'), `http://${address}:8080/`], { timeoutMs: 10_000 });
    },
    serviceEvent(id, pred, timeoutMs = 5_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => (off(), reject(new Error(`no matching service event for ${id} within ${timeoutMs} ms`))), timeoutMs);
        const off = c.onNotification((_m, p) => {
          const e = p as { topic: string; id: string; state: number; status: number; activeState?: string };
          if (e.topic === 'service' && e.id === id && pred(e)) {
            clearTimeout(timer);
            off();
            resolve({ ...e, at: Date.now() });
          }
        });
      });
    },
  };
}
