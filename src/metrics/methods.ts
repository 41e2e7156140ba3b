import * as z from 'zod';
import { defineMethod, type MethodSpec } from '../rpc/registry.js';
import { CONTENT_TYPE } from './exposition.js';

const metricsResult = z.object({
  text: z.string().describe('the Prometheus text exposition format, version 0.0.4'),
  contentType: z.string(),
  sampledAt: z.number().nullable().describe('ms since the epoch of the monitoring sample the figures come from'),
});

export interface MetricsSource {
  /** Takes a monitoring sample now (or joins one in flight). */
  sampleNow(): Promise<void>;
  sampled(): boolean;
  sampledAt(): number | null;
  text(): string;
}

/**
 * `metrics.get`: the figures as Prometheus text. The result is an object like every other
 * result of the API (SPEC 7), so fields can be added; the text itself is in `text`.
 */
export function metricsMethods(source: MetricsSource): MethodSpec<any, any>[] {
  return [
    defineMethod({
      name: 'metrics.get',
      summary: 'smd figures (services, traffic, operations, alerts, RPC) in the Prometheus text exposition format, from the last monitoring sample',
      params: z.strictObject({
        fresh: z.boolean().default(false).describe('take a monitoring sample now instead of answering from the last one'),
      }),
      result: metricsResult,
      mutating: false,
      handler: async (p) => {
        if (p.fresh || !source.sampled()) await source.sampleNow();
        return { text: source.text(), contentType: CONTENT_TYPE, sampledAt: source.sampledAt() };
      },
    }),
  ];
}
