import * as z from 'zod';
import { maybeWait, waitParam } from '../operations/methods.js';
import type { Operations } from '../operations/operations.js';
import { defineMethod, noParams, type MethodSpec } from '../rpc/registry.js';
import type { StateApplier } from './apply.js';
import { desiredStateSchema } from './plan.js';

export function stateMethods(applier: StateApplier, ops: Operations): MethodSpec<any, any>[] {
  return [
    defineMethod({
      name: 'state.apply',
      summary: 'Make the device match a desired state (all services and layers it should have), all or nothing; the operation result lists per item what was done',
      params: z.strictObject({ desired: desiredStateSchema, force: z.boolean().optional(), wait: waitParam }),
      mutating: true,
      handler: (p) => maybeWait(ops, applier.apply(p.desired, p.force ?? false), p.wait),
    }),
    defineMethod({
      name: 'state.get',
      summary: 'The desired state last asked for, how its apply ended, and the drift between it and the device now',
      params: noParams,
      mutating: false,
      handler: () => applier.view(),
    }),
  ];
}
