/**
 * Stable, short names derived from a service id. Interface names are limited to 15 characters and
 * service ids may be long, so every kernel-visible name is built from a short hash of the id.
 */
import { createHash } from 'node:crypto';

export function shortHash(id: string, length = 10): string {
  return createHash('sha256').update(id, 'utf8').digest('hex').slice(0, length);
}

export const NETNS_PREFIX = 'smd-';
export const HOST_VETH_PREFIX = 'smdh';
/** Name of the peer while it is created in the host namespace, before it moves and becomes eth0. */
export const PEER_VETH_PREFIX = 'smdp';
/** The interface a service sees inside its namespace. */
export const NS_IFNAME = 'eth0';

/** `smd-<10 hex>`: 14 characters; the namespace lives at /run/netns/<name>. */
export function netnsNameFor(serviceId: string): string {
  return NETNS_PREFIX + shortHash(serviceId);
}

export function netnsPathFor(serviceId: string): string {
  return `/run/netns/${netnsNameFor(serviceId)}`;
}

/** `smdh<10 hex>`: the host side of the service's veth pair, enslaved to the bridge. */
export function hostVethFor(serviceId: string): string {
  return HOST_VETH_PREFIX + shortHash(serviceId);
}

export function peerVethFor(serviceId: string): string {
  return PEER_VETH_PREFIX + shortHash(serviceId);
}
