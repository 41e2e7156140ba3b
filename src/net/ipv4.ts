/** Pure IPv4 arithmetic for smd's subnet: parse, format, CIDR hosts. */
import { SmError } from '../errors.js';

export interface Cidr {
  /** Network address as an unsigned 32-bit integer. */
  network: number;
  prefix: number;
}

export function parseIpv4(s: string): number {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s.trim());
  if (!m) throw new SmError('INTERNAL', `not an IPv4 address: ${s}`);
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) throw new SmError('INTERNAL', `not an IPv4 address: ${s}`);
  return ((parts[0]! << 24) >>> 0) + (parts[1]! << 16) + (parts[2]! << 8) + parts[3]!;
}

export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

function mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** Parses `a.b.c.d/p` (a bare address is /32); the host bits are cleared. */
export function parseCidr(s: string): Cidr {
  const [addr, p, ...rest] = s.trim().split('/');
  const prefix = p === undefined ? 32 : Number(p);
  if (rest.length > 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > 32 || (p !== undefined && !/^\d+$/.test(p))) {
    throw new SmError('INTERNAL', `not an IPv4 CIDR: ${s}`);
  }
  return { network: (parseIpv4(addr!) & mask(prefix)) >>> 0, prefix };
}

/** The canonical text iptables-save prints: `a.b.c.d/p`. */
export function formatCidr(c: Cidr): string {
  return `${formatIpv4(c.network)}/${c.prefix}`;
}

export function normalizeCidr(s: string): string {
  return formatCidr(parseCidr(s));
}

/** Usable host addresses (network and broadcast excluded for prefixes below 31). */
export function hostCount(c: Cidr): number {
  const size = 2 ** (32 - c.prefix);
  return c.prefix >= 31 ? size : size - 2;
}

/** The i-th usable host address of the subnet, i from 0. */
export function hostAt(c: Cidr, i: number): string {
  if (!Number.isInteger(i) || i < 0 || i >= hostCount(c)) throw new SmError('LIMIT', `subnet ${formatCidr(c)} has no host #${i + 1}`);
  return formatIpv4(c.network + (c.prefix >= 31 ? 0 : 1) + i);
}

/** Index of an address among the subnet's hosts, or -1 when outside. */
export function hostIndex(c: Cidr, addr: string): number {
  const n = parseIpv4(addr);
  if (((n & mask(c.prefix)) >>> 0) !== c.network) return -1;
  const i = n - c.network - (c.prefix >= 31 ? 0 : 1);
  return i >= 0 && i < hostCount(c) ? i : -1;
}

export function contains(c: Cidr, addr: string): boolean {
  return ((parseIpv4(addr) & mask(c.prefix)) >>> 0) === c.network;
}
