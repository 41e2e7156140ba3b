export interface InvariantSandbox {
  unitDir: string;
  exec(cmd: string, args?: readonly string[], opts?: { timeoutMs?: number }): Promise<{ stdout: string; stderr: string; code: number }>;
  run(cmd: string, args?: readonly string[], opts?: { timeoutMs?: number }): Promise<string>;
}
export interface InvariantOptions {
  dbPath: string;
  dataDir: string;
  runDir: string;
  sandbox: InvariantSandbox;
}
export function localSandbox(unitDir?: string): InvariantSandbox;
/** integrity_check, no operation left running, rows vs unit files/dirs/accounts/layers/mounts. Returns the problems found. */
export function checkInvariants(opts: InvariantOptions): Promise<string[]>;
export function checkExtraInvariants(
  opts: InvariantOptions & { live?: Record<string, string>; traffic?: boolean; chainName?: (id: string, direction: 'in' | 'out') => string },
): Promise<string[]>;
export function readJson(path: string): unknown;
