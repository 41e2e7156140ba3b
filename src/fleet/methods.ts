import { defineMethod, noParams, type MethodSpec } from '../rpc/registry.js';
import type { FleetStatus } from './bridge.js';

/** `fleet.status` (read-only): the connection, the last desired state, the outbox. */
export function fleetMethods(bridge: () => { status_(): FleetStatus } | null): MethodSpec<any, any>[] {
  return [
    defineMethod({
      name: 'fleet.status',
      summary: 'The fleet bridge (SPEC 14): connection to the broker, the last desired state and its outcome, the outbox depth',
      params: noParams,
      mutating: false,
      handler: () => bridge()?.status_() ?? { enabled: false },
    }),
  ];
}
