/**
 * Pure planning of a service's network policy as iptables chains, in iptables-save's canonical
 * spelling (so an unchanged policy plans to nothing):
 *
 * - filter `SMD_POLICY`, hooked first in FORWARD (before the counting chains, so a dropped packet
 *   is never counted as traffic): replies (`RELATED,ESTABLISHED`) return at once, then
 *   `-s <addr> -j SMD_<h>_POL_OUT` and `-d <addr> -j SMD_<h>_POL_IN` for each service that has
 *   rules in that direction.
 * - `SMD_<h>_POL_OUT` / `_POL_IN`: the rules of that direction by priority (allow = RETURN: on to the counting chain; drop = DROP; reject =
 *   REJECT, tcp-reset for TCP), then for `egress: deny` DNS to the resolvers and a final DROP.
 *   Dropped packets are the counters of the DROP/REJECT rules (parse.ts `droppedPackets`).
 * - nat `SMD_PORTS`, hooked to PREROUTING for packets to the device's own addresses, jumps to
 *   `SMD_<h>_DNAT`: one DNAT per exposed port (and interface), to the service's address.
 */
import { normalizeCidr } from '../net/ipv4.js';
import { POLICY, PORTS, policyChain, portsChain, type Direction } from './naming.js';
import type { ExposedPort, NetworkPolicy, TrafficRule } from './policy-schema.js';
import type { DesiredChain } from './rules.js';

export type { NetworkPolicy } from './policy-schema.js';

const REPLIES = '-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN';

/** The fixed dispatch chains: filter SMD_POLICY (FORWARD) and nat SMD_PORTS (PREROUTING). */
export function policyDispatch(): { filter: DesiredChain; nat: DesiredChain } {
  return {
    // Replies pass once here, before any service's jump: fewer rules per sample, shorter path per packet.
    filter: { name: POLICY, rules: [REPLIES], hook: { chain: 'FORWARD', spec: `-j ${POLICY}` } },
    nat: { name: PORTS, rules: [], hook: { chain: 'PREROUTING', spec: `-m addrtype --dst-type LOCAL -j ${PORTS}` } },
  };
}

/** Rules of one direction, lowest priority first, ties by id (a stable order whatever the input order). */
export function orderedRules(rules: readonly TrafficRule[], direction: Direction): TrafficRule[] {
  return rules.filter((r) => r.direction === direction).sort((a, b) => a.priority - b.priority || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** `-p tcp -m tcp --dport 80` or `-p tcp -m multiport --dports 80,443`, as iptables-save prints them. */
function protoPorts(protocol: string | undefined, ports: readonly number[] | undefined): string[] {
  if (!protocol) return [];
  const out = [`-p ${protocol}`];
  if (ports && ports.length === 1) out.push(`-m ${protocol} --dport ${ports[0]}`);
  else if (ports && ports.length > 1) out.push(`-m multiport --dports ${ports.join(',')}`);
  return out;
}

function target(action: TrafficRule['action'], protocol: string | undefined): string {
  if (action === 'allow') return '-j RETURN';
  if (action === 'drop') return '-j DROP';
  return protocol === 'tcp' ? '-j REJECT --reject-with tcp-reset' : '-j REJECT --reject-with icmp-port-unreachable';
}

/** One traffic rule as a rule spec of its direction's chain. */
export function ruleSpec(r: TrafficRule): string {
  const remote = r.filter.cidr ? [`${r.direction === 'in' ? '-s' : '-d'} ${normalizeCidr(r.filter.cidr)}`] : [];
  return [...remote, ...protoPorts(r.filter.protocol, r.filter.ports), target(r.action, r.filter.protocol)].join(' ');
}

/** Whether a direction needs a policy chain at all (no rules and allow: nothing to evaluate). */
export function needsChain(policy: NetworkPolicy, direction: Direction): boolean {
  return policy.trafficRules.some((r) => r.direction === direction) || (direction === 'out' && policy.egress === 'deny');
}

/** The filter chain of one direction of a service's policy, hooked from SMD_POLICY; null when it needs none. */
export function policyChainRules(serviceId: string, address: string, policy: NetworkPolicy, direction: Direction): DesiredChain | null {
  if (!needsChain(policy, direction)) return null;
  const name = policyChain(serviceId, direction);
  const rules = orderedRules(policy.trafficRules, direction).map(ruleSpec);
  if (direction === 'out' && policy.egress === 'deny') {
    for (const ns of policy.nameservers) for (const p of ['udp', 'tcp']) rules.push(`-d ${normalizeCidr(ns)} -p ${p} -m ${p} --dport 53 -j RETURN`);
    rules.push('-j DROP');
  }
  const self = `${direction === 'in' ? '-d' : '-s'} ${normalizeCidr(address)}`;
  // Rebuilt on any change: its dropped count is the sum of its DROP/REJECT counters, which restarts at 0.
  return { name, rules, hook: { chain: POLICY, spec: `${self} -j ${name}` }, rebuildOnChange: true };
}

/** The host port of an exposed port (default: the service's port). */
export function hostPortOf(p: Pick<ExposedPort, 'port' | 'hostPort'>): number {
  return (p.hostPort ?? p.port)!;
}

/** The nat chain of a service's exposed ports, hooked from SMD_PORTS; null when it exposes none. */
export function portsChainRules(serviceId: string, address: string, ports: readonly ExposedPort[]): DesiredChain | null {
  if (ports.length === 0) return null;
  const name = portsChain(serviceId);
  const rules: string[] = [];
  for (const p of ports) {
    if (p.port === undefined) continue; // resolved at install and configure (services/ports.ts); never guessed here
    const dnat = `-p ${p.protocol} -m ${p.protocol} --dport ${hostPortOf(p)} -j DNAT --to-destination ${address}:${p.port}`;
    if (p.interfaces?.length) for (const i of p.interfaces) rules.push(`-i ${i} ${dnat}`);
    else rules.push(dnat);
  }
  return { name, rules, hook: { chain: PORTS, spec: `-j ${name}` } };
}

/** Every chain of one service's policy, by table. */
export function servicePolicyChains(serviceId: string, address: string, policy: NetworkPolicy): { filter: DesiredChain[]; nat: DesiredChain[] } {
  const filter = (['in', 'out'] as const).map((d) => policyChainRules(serviceId, address, policy, d)).filter((c): c is DesiredChain => c !== null);
  const ports = portsChainRules(serviceId, address, policy.exposedPorts);
  return { filter, nat: ports ? [ports] : [] };
}
