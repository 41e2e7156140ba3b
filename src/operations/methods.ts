import * as z from 'zod';
import { defineMethod, type MethodSpec } from '../rpc/registry.js';
import type { Operation, Operations } from './operations.js';

const stateSchema = z.enum(['pending', 'running', 'succeeded', 'failed']);

/** `wait: true` on a long action: return the finished operation instead of the started one. */
export const waitParam = z.boolean().optional().describe('wait until the operation has finished');

/** Longest a single `wait` may block a request (the client can wait again). */
export const MAX_WAIT_MS = 15 * 60_000;

export async function maybeWait(ops: Operations, op: Operation, wait: boolean | undefined): Promise<Operation> {
  return wait ? ops.wait(op.id, MAX_WAIT_MS) : op;
}

export function operationMethods(ops: Operations): MethodSpec<any, any>[] {
  return [
    defineMethod({
      name: 'operations.list',
      summary: 'Recent operations, newest first, optionally only those in one state',
      params: z.strictObject({ state: stateSchema.optional(), limit: z.number().int().min(1).max(1000).optional() }),
      mutating: false,
      handler: (p) => ops.list({ ...(p.state ? { state: p.state } : {}), ...(p.limit ? { limit: p.limit } : {}) }),
    }),
    defineMethod({
      name: 'operations.get',
      summary: 'One operation with its steps',
      params: z.strictObject({ id: z.string().min(1) }),
      mutating: false,
      handler: (p) => ({ ...ops.get(p.id), steps: ops.steps(p.id) }),
    }),
    defineMethod({
      name: 'operations.wait',
      summary: 'Wait until an operation has finished or timeoutMs passed; returns it as it is then',
      params: z.strictObject({ id: z.string().min(1), timeoutMs: z.number().int().min(0).max(MAX_WAIT_MS).default(30_000) }),
      mutating: false,
      handler: (p) => ops.wait(p.id, p.timeoutMs),
    }),
  ];
}
