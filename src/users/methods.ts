import * as z from 'zod';
import { maybeWait, waitParam } from '../operations/methods.js';
import type { Operations } from '../operations/operations.js';
import { defineMethod, noParams, type MethodSpec } from '../rpc/registry.js';
import type { ServiceManager } from '../services/manager.js';

/** users.get / users.set: which claims use the device now; switching is one operation. */
export function userMethods(services: ServiceManager, ops: Operations): MethodSpec<any, any>[] {
  return [
    defineMethod({
      name: 'users.get',
      summary: 'The current users (sorted claims) and the services attached to them',
      params: noParams,
      mutating: false,
      handler: () => services.usersView(),
    }),
    defineMethod({
      name: 'users.set',
      summary: "Switch to another set of claims: the previous users' services stop, the new users' services start",
      params: z.strictObject({ users: z.array(z.string().min(1).max(200)).max(100), wait: waitParam }),
      mutating: true,
      handler: (p) => maybeWait(ops, services.setUsers(p.users), p.wait),
    }),
  ];
}
