/**
 * A pure parser of `iptables-save -c` output (legacy and nf_tables backends). Counters are BigInt:
 * the kernel's are 64-bit and exceed Number's 2^53.
 */
import { SmError } from '../errors.js';

export interface SavedChain {
  name: string;
  /** ACCEPT/DROP for built-in chains, `-` for user chains. */
  policy: string;
  packets: bigint;
  bytes: bigint;
}

export interface SavedRule {
  chain: string;
  packets: bigint;
  bytes: bigint;
  /** Everything after `-A <chain>`, as iptables-save prints it (may be empty). */
  spec: string;
  /** The jump target (`-j X` / `-g X`), or null for a rule that only counts. */
  target: string | null;
}

export interface SavedTable {
  name: string;
  chains: Map<string, SavedChain>;
  /** In the order the kernel evaluates them within each chain. */
  rules: SavedRule[];
}

export type SavedRuleset = Map<string, SavedTable>;

const COUNTERS = /^\[(\d+):(\d+)\]$/;

function bad(lineNo: number, line: string, why: string): SmError {
  return new SmError('INTERNAL', `iptables-save output line ${lineNo}: ${why}: ${line.slice(0, 200)}`);
}

/** Splits a rule spec into tokens, honouring the double quotes iptables-save puts around comments. */
export function tokenize(spec: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(spec); m; m = re.exec(spec)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!);
  return out;
}

function targetOf(tokens: string[]): string | null {
  for (let i = tokens.length - 2; i >= 0; i--) if (tokens[i] === '-j' || tokens[i] === '-g' || tokens[i] === '--jump' || tokens[i] === '--goto') return tokens[i + 1]!;
  return null;
}

export function parseIptablesSave(text: string): SavedRuleset {
  const tables: SavedRuleset = new Map();
  let table: SavedTable | null = null;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      const name = line.slice(1).trim();
      table = tables.get(name) ?? { name, chains: new Map(), rules: [] };
      tables.set(name, table);
      continue;
    }
    if (line === 'COMMIT') {
      table = null;
      continue;
    }
    if (!table) throw bad(i + 1, line, 'outside of a table');
    if (line.startsWith(':')) {
      const [name, policy = '-', counters = '[0:0]'] = line.slice(1).split(/\s+/);
      const m = COUNTERS.exec(counters);
      if (!name || !m) throw bad(i + 1, line, 'bad chain line');
      table.chains.set(name, { name, policy, packets: BigInt(m[1]!), bytes: BigInt(m[2]!) });
      continue;
    }
    let rest = line;
    let packets = 0n;
    let bytes = 0n;
    if (rest.startsWith('[')) {
      const end = rest.indexOf(']');
      const m = COUNTERS.exec(rest.slice(0, end + 1));
      if (end < 0 || !m) throw bad(i + 1, line, 'bad counters');
      packets = BigInt(m[1]!);
      bytes = BigInt(m[2]!);
      rest = rest.slice(end + 1).trimStart();
    }
    const am = /^(?:-A|--append)\s+(\S+)\s*(.*)$/.exec(rest);
    if (!am) throw bad(i + 1, line, 'expected a rule (-A)');
    let spec = am[2]!.trim();
    // Old iptables-save wrote counters inside the rule: `-c <packets> <bytes>`.
    const cm = /(?:^|\s)-c\s+(\d+)\s+(\d+)(?=\s|$)/.exec(spec);
    if (cm) {
      packets = BigInt(cm[1]!);
      bytes = BigInt(cm[2]!);
      spec = (spec.slice(0, cm.index) + spec.slice(cm.index + cm[0].length)).replace(/\s+/g, ' ').trim();
    }
    table.rules.push({ chain: am[1]!, packets, bytes, spec, target: targetOf(tokenize(spec)) });
  }
  return tables;
}

/** Rules of one chain, in order. */
export function rulesOf(table: SavedTable | undefined, chain: string): SavedRule[] {
  return table ? table.rules.filter((r) => r.chain === chain) : [];
}

/**
 * Byte counters of every chain in one pass: the sum of the chain's counting rules (rules with no
 * target). Chains that exist but count nothing map to 0n; absent chains are absent.
 */
export function countingBytes(table: SavedTable | undefined): Map<string, bigint> {
  const out = new Map<string, bigint>();
  if (!table) return out;
  for (const name of table.chains.keys()) out.set(name, 0n);
  for (const r of table.rules) if (r.target === null) out.set(r.chain, (out.get(r.chain) ?? 0n) + r.bytes);
  return out;
}

/**
 * Packets each chain dropped or refused: the sum of the packet counters of its DROP and REJECT
 * rules (the policy chains' denials). Chains without such rules map to 0n; absent chains are absent.
 */
export function droppedPackets(table: SavedTable | undefined): Map<string, bigint> {
  const out = new Map<string, bigint>();
  if (!table) return out;
  for (const name of table.chains.keys()) out.set(name, 0n);
  for (const r of table.rules) if (r.target === 'DROP' || r.target === 'REJECT') out.set(r.chain, (out.get(r.chain) ?? 0n) + r.packets);
  return out;
}
