import * as z from 'zod';
import { defineMethod, type MethodSpec } from '../rpc/registry.js';
import type { TrafficMonitor } from './monitor.js';

const trafficRow = z.object({
  chain: z.string(),
  serviceId: z.string().nullable(),
  direction: z.enum(['in', 'out']),
  bytes: z.number(),
  limit: z.number().nullable(),
  blocked: z.boolean(),
  /** Packets the service's network policy dropped or refused (0 for the system chains). */
  dropped: z.number(),
  periodStart: z.number(),
});

export function trafficMethods(monitor: Pick<TrafficMonitor, 'get'>): MethodSpec<any, any>[] {
  return [
    defineMethod({
      name: 'traffic.get',
      summary: 'Traffic of the current period per chain: in = download (to the service), out = upload; serviceId null for the whole device',
      params: z.strictObject({ serviceId: z.string().min(1).optional() }),
      result: z.array(trafficRow),
      mutating: false,
      handler: (p) => monitor.get(p.serviceId),
    }),
  ];
}
