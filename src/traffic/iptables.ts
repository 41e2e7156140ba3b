/**
 * A small typed wrapper over iptables-save / iptables-restore / iptables through the one exec door.
 * (Not the `iptables` npm package: it hard-codes sudo and reads counters without -x.)
 */
import { ShellSession } from '../exec/shell.js';
import { defaultRunner, type Runner } from '../net/runner.js';
import { parseIptablesSave, type SavedRuleset } from './parse.js';

export interface IptablesBinaries {
  iptables: string;
  save: string;
  restore: string;
}

export interface IptablesOptions {
  runner?: Runner;
  binaries?: Partial<IptablesBinaries>;
  timeoutMs?: number;
}

export class Iptables {
  readonly bin: IptablesBinaries;
  private readonly runner: Runner;
  /** Without a runner of the caller's: the periodic save runs from a shell kept for it (see exec/shell.ts). */
  private readonly shell: ShellSession | null;
  private readonly saveRunner: Runner;
  private readonly timeoutMs: number;

  constructor(opts: IptablesOptions = {}) {
    this.runner = opts.runner ?? defaultRunner;
    this.shell = opts.runner ? null : new ShellSession();
    this.saveRunner = this.shell?.run ?? this.runner;
    this.bin = { iptables: 'iptables', save: 'iptables-save', restore: 'iptables-restore', ...opts.binaries };
    this.timeoutMs = opts.timeoutMs ?? 15_000;
  }

  /** All rules and exact counters of one table (null: of every table) in one call. */
  async saveText(table: string | null = 'filter'): Promise<string> {
    return (await this.saveRunner(this.bin.save, table === null ? ['-c'] : ['-c', '-t', table], { timeoutMs: this.timeoutMs, errorCode: 'UNAVAILABLE' })).stdout;
  }

  async save(table: string | null = 'filter'): Promise<SavedRuleset> {
    return parseIptablesSave(await this.saveText(table));
  }

  /** Applies a rule-set script atomically, leaving everything it does not name alone. */
  async restore(script: string): Promise<void> {
    await this.runner(this.bin.restore, ['-w', '--noflush'], { input: script, timeoutMs: this.timeoutMs, errorCode: 'UNAVAILABLE' });
  }

  /** Ends the shell of the periodic save. */
  close(): void {
    this.shell?.close();
  }

  /** `iptables -L <chain> -v -x -n`: the per-chain listing (used as a baseline by the benchmark). */
  async listChain(chain: string, table = 'filter'): Promise<string> {
    return (await this.runner(this.bin.iptables, ['-w', '-t', table, '-L', chain, '-v', '-x', '-n'], { timeoutMs: this.timeoutMs, errorCode: 'UNAVAILABLE' })).stdout;
  }
}
