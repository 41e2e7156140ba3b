/** Chain names: stable across restarts (derived from the service id), within iptables' 28 chars. */
import { createHash } from 'node:crypto';

export const SYSTEM_IN = 'SMD_SYSTEM_IN';
export const SYSTEM_OUT = 'SMD_SYSTEM_OUT';
/** The dispatch chains hooked to FORWARD that jump to the service chains. */
export const FORWARD_IN = 'SMD_FORWARD_IN';
export const FORWARD_OUT = 'SMD_FORWARD_OUT';
export const CHAIN_PREFIX = 'SMD_';
/** iptables' limit on a chain name (XT_EXTENSION_MAXNAMELEN - 1). */
export const MAX_CHAIN_NAME = 28;

export type Direction = 'in' | 'out';

export function chainHash(serviceId: string): string {
  return createHash('sha256').update(serviceId, 'utf8').digest('hex').slice(0, 12).toUpperCase();
}

/** `SMD_<12 hex>_IN` (download, to the service) or `_OUT` (upload): 19/20 characters. */
export function serviceChain(serviceId: string, direction: Direction): string {
  return `${CHAIN_PREFIX}${chainHash(serviceId)}_${direction === 'in' ? 'IN' : 'OUT'}`;
}

export function systemChain(direction: Direction): string {
  return direction === 'in' ? SYSTEM_IN : SYSTEM_OUT;
}

export function forwardChain(direction: Direction): string {
  return direction === 'in' ? FORWARD_IN : FORWARD_OUT;
}

/** The filter dispatch chain hooked first to FORWARD that jumps to the services' policy chains. */
export const POLICY = 'SMD_POLICY';
/** The nat dispatch chain hooked to PREROUTING (for the device's own addresses) that jumps to the services' port chains. */
export const PORTS = 'SMD_PORTS';

/** `SMD_<12 hex>_POL_IN` / `_POL_OUT`: the service's traffic rules per direction (filter table). */
export function policyChain(serviceId: string, direction: Direction): string {
  return `${CHAIN_PREFIX}${chainHash(serviceId)}_POL_${direction === 'in' ? 'IN' : 'OUT'}`;
}

/** `SMD_<12 hex>_DNAT`: the service's exposed ports (nat table). */
export function portsChain(serviceId: string): string {
  return `${CHAIN_PREFIX}${chainHash(serviceId)}_DNAT`;
}

/** Every chain a service has, in any table. */
export function allServiceChains(serviceId: string): string[] {
  return [serviceChain(serviceId, 'in'), serviceChain(serviceId, 'out'), policyChain(serviceId, 'in'), policyChain(serviceId, 'out'), portsChain(serviceId)];
}

/** A chain smd owns (service, policy, ports, system or dispatch). */
export function isSmdChain(name: string): boolean {
  return /^SMD_(([0-9A-F]{12}|SYSTEM|FORWARD)_(IN|OUT)|[0-9A-F]{12}_(POL_IN|POL_OUT|DNAT)|POLICY|PORTS)$/.test(name);
}
