import * as z from 'zod';
import { defineMethod, type MethodSpec } from '../rpc/registry.js';
import type { AlertStore } from './store.js';

export const alertSchema = z.object({
  id: z.number().int(),
  time: z.number().int(),
  source: z.string(),
  serviceId: z.string().nullable(),
  kind: z.string(),
  message: z.string(),
  payload: z.record(z.string(), z.unknown()),
});

export function alertMethods(store: AlertStore): MethodSpec<any, any>[] {
  return [
    defineMethod({
      name: 'alerts.list',
      summary: 'Stored alerts (monitoring rules and journal errors): the newest `limit`, oldest first',
      params: z.strictObject({
        since: z.number().int().nonnegative().optional().describe('only alerts at or after this time (ms since the epoch)'),
        serviceId: z.string().min(1).max(200).optional(),
        source: z.enum(['monitoring', 'journal']).optional(),
        limit: z.number().int().positive().max(10_000).default(1000),
      }),
      result: z.array(alertSchema),
      mutating: false,
      handler: (p) => store.list({ ...(p.since !== undefined ? { since: p.since } : {}), ...(p.serviceId !== undefined ? { serviceId: p.serviceId } : {}), ...(p.source !== undefined ? { source: p.source } : {}), limit: p.limit }),
    }),
  ];
}
