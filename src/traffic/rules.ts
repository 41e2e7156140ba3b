/**
 * Pure rule planning: what smd's chains should hold, and the one `iptables-restore --noflush`
 * script that turns the current filter table into that.
 */
import { normalizeCidr } from '../net/ipv4.js';
import type { SavedRuleset, SavedTable } from './parse.js';
import { forwardChain, isSmdChain, systemChain, type Direction } from './naming.js';

export interface DesiredChain {
  name: string;
  /** Rule specs in order (what follows `-A <name>`), in iptables-save's canonical spelling; without hooks. */
  rules: string[];
  /** The rule that jumps here: in a built-in chain (inserted first) or in a dispatch chain (appended). */
  hook: { chain: string; spec: string };
  /** Any change rebuilds the chain (no DROP edited in place): its counters are read as a sum that must restart at 0. */
  rebuildOnChange?: boolean;
}

const DROP = /(^|\s)-j DROP$/;

/**
 * The dispatch chain of one direction, hooked to FORWARD: traffic from (IN) or to (OUT) a local
 * subnet returns uncounted, everything else meets one jump per service (their hooks). Local
 * subnets are checked once here rather than in every service chain: with 100 services that is
 * ~420 rules instead of ~1200, and iptables-save, the cost of every sample, scales with rules
 * (npm run bench -- traffic).
 */
export function forwardChainRules(direction: Direction, localSubnets: readonly string[]): DesiredChain {
  const name = forwardChain(direction);
  const remote = direction === 'in' ? '-s' : '-d';
  return { name, rules: localSubnets.map((s) => `${remote} ${normalizeCidr(s)} -j RETURN`), hook: { chain: 'FORWARD', spec: `-j ${name}` } };
}

/**
 * A service chain, reached from its direction's dispatch chain for the service's address: one
 * counting rule; when blocked, a DROP before it, so dropped traffic is neither delivered nor counted.
 */
export function serviceChainRules(name: string, direction: Direction, address: string, blocked: boolean): DesiredChain {
  const self = `${direction === 'in' ? '-d' : '-s'} ${normalizeCidr(address)}`;
  const rules = blocked ? [`${self} -j DROP`, self] : [self];
  return { name, rules, hook: { chain: forwardChain(direction), spec: `${self} -j ${name}` } };
}

/** SMD_SYSTEM_IN/OUT: everything the device itself receives/sends, except loopback and local subnets. */
export function systemChainRules(direction: Direction, localSubnets: readonly string[]): DesiredChain {
  const name = systemChain(direction);
  const lo = direction === 'in' ? '-i lo -j RETURN' : '-o lo -j RETURN';
  const remote = direction === 'in' ? '-s' : '-d';
  const rules = [lo, ...localSubnets.map((s) => `${remote} ${normalizeCidr(s)} -j RETURN`), ''];
  return { name, rules, hook: { chain: direction === 'in' ? 'INPUT' : 'OUTPUT', spec: `-j ${name}` } };
}

export interface Plan {
  /** The restore script, or null when nothing is to change. */
  script: string | null;
  /** Chains flushed and refilled, or created: their counters (re)start at 0. */
  rebuilt: string[];
  /** Chains deleted. */
  removed: string[];
}

const BUILTIN = ['INPUT', 'FORWARD', 'OUTPUT', 'PREROUTING', 'POSTROUTING'];

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * Plans the changes from `current` (the parsed filter table; undefined = empty) to `desired`.
 * A chain whose rules differ only by its DROP rule gets the DROP inserted or deleted in place, so
 * its counters survive a block or unblock; any other difference rebuilds the chain (flushed and
 * refilled, so hooks inside it are re-added). Hooks are kept where they are, else inserted first
 * in a built-in chain or appended to a dispatch chain (after its RETURN rules). With
 * `removeOthers`, every other smd chain (and its hooks) is deleted.
 */
export function planRules(current: SavedTable | undefined, desired: readonly DesiredChain[], opts: { removeOthers?: boolean; remove?: readonly string[] } = {}): Plan {
  const p = planTable(current, desired, opts);
  if (p.body.length === 0) return { script: null, rebuilt: p.rebuilt, removed: p.removed };
  return { script: ['*filter', ...p.body, 'COMMIT', ''].join('\n'), rebuilt: p.rebuilt, removed: p.removed };
}

/**
 * planRules over several tables (filter and nat): one script, one iptables-restore, each table
 * committed in it. `rebuilt` and `removed` name chains of every table (their names are distinct).
 */
export function planRuleset(current: SavedRuleset, desired: Readonly<Record<string, readonly DesiredChain[]>>, opts: { removeOthers?: boolean; remove?: readonly string[] } = {}): Plan {
  const lines: string[] = [];
  const rebuilt: string[] = [];
  const removed: string[] = [];
  for (const [table, chains] of Object.entries(desired)) {
    const p = planTable(current.get(table), chains, opts);
    rebuilt.push(...p.rebuilt);
    removed.push(...p.removed);
    if (p.body.length) lines.push(`*${table}`, ...p.body, 'COMMIT');
  }
  return { script: lines.length ? [...lines, ''].join('\n') : null, rebuilt, removed };
}

function planTable(current: SavedTable | undefined, desired: readonly DesiredChain[], opts: { removeOthers?: boolean; remove?: readonly string[] }): { body: string[]; rebuilt: string[]; removed: string[] } {
  const declare: string[] = [];
  const edits: string[] = [];
  const hooksDel: string[] = [];
  const hooksAdd: string[] = [];
  const drop: string[] = [];
  const rebuilt: string[] = [];
  const removed: string[] = [];
  const wanted = new Set(desired.map((d) => d.name));

  // A jump to an smd chain is a hook, wherever it is; every other rule of a chain is its rule.
  const hooks = new Map<string, { chain: string; spec: string }[]>();
  const specs = new Map<string, string[]>();
  for (const r of current?.rules ?? []) {
    const to = r.target;
    if (to && isSmdChain(to)) {
      const list = hooks.get(to);
      if (list) list.push({ chain: r.chain, spec: r.spec });
      else hooks.set(to, [{ chain: r.chain, spec: r.spec }]);
    } else if (!BUILTIN.includes(r.chain)) {
      const list = specs.get(r.chain);
      if (list) list.push(r.spec);
      else specs.set(r.chain, [r.spec]);
    }
  }

  for (const d of desired) {
    const exists = current?.chains.has(d.name) ?? false;
    const have = specs.get(d.name) ?? [];
    if (exists && sameList(have, d.rules)) continue;
    const haveNoDrop = have.filter((s) => !DROP.test(s));
    const wantNoDrop = d.rules.filter((s) => !DROP.test(s));
    if (exists && !d.rebuildOnChange && sameList(haveNoDrop, wantNoDrop)) {
      for (const s of have) if (DROP.test(s)) edits.push(`-D ${d.name} ${s}`);
      d.rules.forEach((s, i) => {
        if (DROP.test(s)) edits.push(`-I ${d.name} ${i + 1} ${s}`);
      });
    } else {
      declare.push(`:${d.name} - [0:0]`);
      for (const s of d.rules) edits.push(s ? `-A ${d.name} ${s}` : `-A ${d.name}`);
      rebuilt.push(d.name);
    }
  }
  const flushed = new Set(rebuilt);

  for (const d of desired) {
    let kept = false;
    for (const h of hooks.get(d.name) ?? []) {
      if (flushed.has(h.chain)) continue; // gone with the flush
      if (!kept && h.chain === d.hook.chain && h.spec === d.hook.spec) kept = true;
      else hooksDel.push(`-D ${h.chain} ${h.spec}`);
    }
    if (!kept) hooksAdd.push(BUILTIN.includes(d.hook.chain) ? `-I ${d.hook.chain} 1 ${d.hook.spec}` : `-A ${d.hook.chain} ${d.hook.spec}`);
  }

  const toRemove = new Set<string>(opts.remove ?? []);
  if (opts.removeOthers) for (const name of current?.chains.keys() ?? []) if (isSmdChain(name) && !wanted.has(name)) toRemove.add(name);
  for (const name of toRemove) {
    if (wanted.has(name) || !current?.chains.has(name)) continue;
    // Every reference must go first, or -X fails.
    for (const h of hooks.get(name) ?? []) if (!flushed.has(h.chain)) hooksDel.push(`-D ${h.chain} ${h.spec}`);
    drop.push(`-F ${name}`, `-X ${name}`);
    removed.push(name);
  }

  return { body: [...declare, ...hooksDel, ...edits, ...hooksAdd, ...drop], rebuilt, removed };
}
