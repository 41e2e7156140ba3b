/** What the traffic domain answers and accepts. */
import type { Direction } from './naming.js';
import type { NetworkPolicy } from './policy-schema.js';

export interface TrafficLimits {
  /** Bytes per period; null or 0: no limit. */
  ulLimit: number | null;
  dlLimit: number | null;
  /** Bytes per second; null or 0: not shaped. */
  ulSpeed: number | null;
  dlSpeed: number | null;
}

export interface ServiceTrafficOptions extends TrafficLimits {
  /** Host side of the service's veth (download shaping); from NetworkManager.ensureServiceNetwork. */
  hostVeth?: string;
  /** The service's namespace name (upload shaping). */
  netnsName?: string;
  /** Exposed ports, traffic rules and egress default (absent: none, egress allowed). */
  policy?: NetworkPolicy;
}

export interface TrafficRow {
  chain: string;
  serviceId: string | null;
  direction: Direction;
  bytes: number;
  limit: number | null;
  blocked: boolean;
  /** Packets the service's network policy dropped or refused in this direction, this period. */
  dropped: number;
  periodStart: number;
}
