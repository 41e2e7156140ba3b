/**
 * A service's name resolution: its own /etc/hosts (localhost, its host name, its `dnsRules`) and
 * /etc/resolv.conf (its `nameservers`, else the device's), bound read-only into its root by the
 * unit. Rendering and parsing are pure; the files are rewritten in place (not renamed) because a
 * bind-mounted file is an inode: a rename would leave the running service with the old one.
 */
import { readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';

export interface DnsRule {
  domain: string;
  ip: string;
}

/** The hosts file: loopback names, the service's host name, then one line per rule (first wins, as in glibc and musl). */
export function renderHosts(hostname: string | undefined, rules: readonly DnsRule[]): string {
  const lines = ['# written by smd: the service\'s dnsRules (services.configure changes it)', '127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback'];
  if (hostname) lines.push(`127.0.1.1\t${hostname}`);
  for (const r of rules) lines.push(`${r.ip}\t${r.domain}`);
  return lines.join('\n') + '\n';
}

export function renderResolvConf(nameservers: readonly string[]): string {
  return ['# written by smd: the service\'s nameservers (default the device\'s)', ...nameservers.map((n) => `nameserver ${n}`)].join('\n') + '\n';
}

/** IPv4 `nameserver` lines of a resolv.conf, in order; loopback ones (a local stub) left out: a service's namespace cannot reach them. */
export function parseNameservers(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\d{1,3}(?:\.\d{1,3}){3})\s*(?:#.*)?$/.exec(line);
    if (m && !m[1]!.startsWith('127.') && !out.includes(m[1]!)) out.push(m[1]!);
  }
  return out;
}

/**
 * The device's resolvers a service can use: /etc/resolv.conf's, or, when that names only a local
 * stub (systemd-resolved's 127.0.0.53), the upstream ones resolved keeps in
 * /run/systemd/resolve/resolv.conf. Empty when neither has any.
 */
export function deviceNameservers(read: (path: string) => string | null = readOrNull): string[] {
  for (const path of ['/etc/resolv.conf', '/run/systemd/resolve/resolv.conf']) {
    const text = read(path);
    const found = text === null ? [] : parseNameservers(text);
    if (found.length) return found.slice(0, 3);
  }
  return [];
}

function readOrNull(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

/**
 * Writes `text` into the file at `path` in place (created 0644 if missing), only when it differs.
 * Returns whether it wrote.
 */
export async function writeInPlace(path: string, text: string): Promise<boolean> {
  const fh = await open(path, 'a+', 0o644);
  try {
    const have = await fh.readFile('utf8');
    if (have === text) return false;
    await fh.truncate(0);
    await fh.write(text, 0, 'utf8');
    await fh.sync();
    return true;
  } finally {
    await fh.close();
  }
}
