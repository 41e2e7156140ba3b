import * as z from 'zod';
import { defineMethod, type MethodSpec } from '../rpc/registry.js';
import type { Monitor } from './monitor.js';

export function monitoringMethods(monitor: Monitor): MethodSpec<any, any>[] {
  return [
    defineMethod({
      name: 'monitoring.get',
      summary: 'Resource use of the services (cpu, memory, tasks, storage, state) and of the device, from the last sample',
      params: z.strictObject({
        serviceId: z.string().min(1).max(200).optional(),
        fresh: z.boolean().default(false).describe('take a sample now instead of answering from the last one'),
      }),
      mutating: false,
      handler: async (p) => {
        if (p.fresh || !monitor.sampled) await monitor.sampleNow();
        return monitor.get(p.serviceId);
      },
    }),
  ];
}
