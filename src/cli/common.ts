import { resolve as resolvePath } from 'node:path';
import { Command, Option } from 'commander';
import { RpcClient } from './client.js';
import { followOperation } from './progress.js';

/** What every smctl command shares: the program, its global options, the client, output. */

/** Exit codes: 0 ok, 1 smd answered with an error or the action failed, 2 usage, 3 smd unreachable. */
export const EXIT = { ok: 0, failed: 1, usage: 2, unreachable: 3 } as const;

export class Unreachable extends Error {}

interface Globals {
  socket: string;
  json: boolean;
}

export const program = new Command('smctl')
  .description('Control smd, the on-device service manager, over its JSON-RPC socket')
  .addOption(new Option('-s, --socket <path>', 'smd socket').env('SMD_SOCKET').default('/run/smd/smd.sock'))
  .option('--json', 'print JSON for scripts', false)
  .showHelpAfterError()
  .exitOverride();

export function globals(): Globals {
  return program.opts<Globals>();
}

export async function withClient<T>(fn: (c: RpcClient) => Promise<T>): Promise<T> {
  let client: RpcClient;
  try {
    client = await RpcClient.connect(globals().socket);
  } catch (err) {
    throw new Unreachable((err as Error).message);
  }
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

/** Prints JSON with --json, else the human rendering. */
export function out(value: unknown, human: () => string): void {
  process.stdout.write((globals().json ? JSON.stringify(value, null, 2) : human()) + '\n');
}

/** Starts a long action; follows it to the end with a progress bar on a terminal. */
export async function runOperation(c: RpcClient, method: string, params: Record<string, unknown>): Promise<void> {
  const started = await c.call<Parameters<typeof followOperation>[1]>(method, params);
  const done = await followOperation(c, started, { tty: process.stderr.isTTY === true && !globals().json });
  out(done, () => `${done.kind} ${done.state}${done.error ? `: ${done.error.code}: ${done.error.message}` : ''}`);
  if (done.state !== 'succeeded') process.exitCode = EXIT.failed;
}


/** An image argument: a URL or docker:// reference as given, a file path made absolute. */
export function imageArgument(image: string): string {
  return /^(https?|docker):\/\//.test(image) ? image : resolvePath(image);
}
