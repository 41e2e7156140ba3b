/**
 * The network policy settings of a service (SPEC section 5): exposed ports, traffic rules, the
 * egress default, DNS rules and resolvers. Declared once: they validate services.install,
 * services.configure and the desired state (every bad value is -32602 with its path), give the
 * TypeScript types and the OpenRPC document. Every value that reaches an iptables rule, a unit or
 * a hosts file is checked here to a strict shape: numbers in range, canonical IPv4, names of
 * letters, digits, dots and dashes only (no spaces, newlines or quotes).
 */
import * as z from 'zod';

const port = z.number().int().min(1).max(65535);
const ipv4Re = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
export const ipv4 = z.string().regex(ipv4Re, 'expected an IPv4 address a.b.c.d');
export const cidr = z
  .string()
  .regex(/^[0-9./]{7,18}$/, 'expected an IPv4 CIDR a.b.c.d/p')
  .refine((s) => {
    const [a, p, ...rest] = s.split('/');
    return rest.length === 0 && ipv4Re.test(a ?? '') && (p === undefined || (/^\d{1,2}$/.test(p) && Number(p) <= 32));
  }, 'expected an IPv4 CIDR a.b.c.d/p');
/** A network interface name as the kernel allows it (IFNAMSIZ 16), no `/`, spaces or `+`. */
const ifname = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/, 'expected an interface name');
/** A DNS name: labels of letters, digits and dashes, dot-separated, at most 253 characters. */
const domain = z
  .string()
  .max(253)
  .regex(/^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9_]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/, 'expected a domain name');

export const exposedPortSchema = z.strictObject({
  /** The service's port (inside its namespace); default: the port of that protocol the image config's ExposedPorts names (hostPort if it names that one, else its only one). */
  port: port.optional(),
  protocol: z.enum(['tcp', 'udp']).default('tcp'),
  /** The device's port; default `port`. */
  hostPort: port.optional(),
  /** Only on these interfaces of the device (default: all its addresses). */
  interfaces: z.array(ifname).min(1).max(8).optional(),
});
export type ExposedPort = z.output<typeof exposedPortSchema>;

export const trafficRuleSchema = z
  .strictObject({
    id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'expected an id of letters, digits, ._-'),
    /** Lower first; ties by id. */
    priority: z.number().int().min(0).max(65535),
    /** in: to the service (from the remote); out: from the service (to the remote). */
    direction: z.enum(['in', 'out']),
    action: z.enum(['allow', 'drop', 'reject']),
    filter: z
      .strictObject({
        /** The remote side: source for `in`, destination for `out`. */
        cidr: cidr.optional(),
        protocol: z.enum(['tcp', 'udp', 'icmp']).optional(),
        /** Destination ports (the service's for `in`, the remote's for `out`); need protocol tcp or udp. */
        ports: z.array(port).min(1).max(15).optional(),
      })
      .default({}),
  })
  .superRefine((r, ctx) => {
    if (r.filter.ports && r.filter.protocol !== 'tcp' && r.filter.protocol !== 'udp') {
      ctx.addIssue({ code: 'custom', path: ['filter', 'protocol'], message: 'ports need protocol tcp or udp' });
    }
  });
export type TrafficRule = z.output<typeof trafficRuleSchema>;

export const dnsRuleSchema = z.strictObject({ domain, ip: ipv4 });
export type DnsRule = z.output<typeof dnsRuleSchema>;

/** The policy fields of the settings object (merged into settingsSchema). */
export const policySettingsShape = {
  exposedPorts: z
    .array(exposedPortSchema)
    .max(64)
    .superRefine((list, ctx) => {
      const seen = new Set<string>();
      list.forEach((p, i) => {
        if (p.port === undefined && p.hostPort === undefined) ctx.addIssue({ code: 'custom', path: [i, 'port'], message: 'port or hostPort is needed' });
        const key = `${p.hostPort ?? p.port}/${p.protocol}`;
        if (seen.has(key)) ctx.addIssue({ code: 'custom', path: [i, 'hostPort'], message: `host port ${key} is listed twice` });
        seen.add(key);
      });
    })
    .optional(),
  trafficRules: z
    .array(trafficRuleSchema)
    .max(100)
    .superRefine((list, ctx) => {
      const seen = new Set<string>();
      list.forEach((r, i) => {
        if (seen.has(r.id)) ctx.addIssue({ code: 'custom', path: [i, 'id'], message: `rule id ${r.id} is used twice` });
        seen.add(r.id);
      });
    })
    .optional(),
  /** What no traffic rule matches, from the service outwards: allow (default) or deny (replies and DNS to its resolvers still pass). */
  egress: z.enum(['allow', 'deny']).optional(),
  dnsRules: z.array(dnsRuleSchema).max(256).optional(),
  /** The resolvers the service uses (its /etc/resolv.conf); default the device's. */
  nameservers: z.array(ipv4).min(1).max(3).optional(),
};

export type PolicySettings = { [K in keyof typeof policySettingsShape]?: z.output<(typeof policySettingsShape)[K]> };
export const POLICY_KEYS = Object.keys(policySettingsShape) as (keyof PolicySettings)[];

/** What the traffic monitor enforces for one service (resolved from its settings). */
export interface NetworkPolicy {
  exposedPorts: ExposedPort[];
  trafficRules: TrafficRule[];
  egress: 'allow' | 'deny';
  /** Resolvers a `deny` egress still lets the service reach on port 53. */
  nameservers: string[];
}

export function isEmptyPolicy(p: NetworkPolicy | undefined): boolean {
  return !p || (p.exposedPorts.length === 0 && p.trafficRules.length === 0 && p.egress === 'allow');
}
