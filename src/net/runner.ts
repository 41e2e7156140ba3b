import { run, type RunOptions, type RunResult } from '../exec/run.js';

/**
 * How net/ and traffic/ run ip, iptables, tc and sysctl: run() by default. Tests pass a runner
 * that enters a sandbox's namespaces (nsenter), so nothing ever touches the host's network.
 */
export type Runner = (file: string, args: readonly string[], opts?: RunOptions) => Promise<RunResult>;

export const defaultRunner: Runner = run;

/** A runner that executes every program inside the mount and network namespace of `pid`. */
export function nsenterRunner(pid: number, nsenter = 'nsenter'): Runner {
  return (file, args, opts) => run(nsenter, ['-t', String(pid), '-m', '-n', '--', file, ...args], opts);
}
