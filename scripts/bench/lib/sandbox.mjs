import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(import.meta.dirname, '../../..');

/**
 * Runs `main` inside scripts/sandbox (private namespaces, systemd, D-Bus, journald): when not
 * inside yet, re-executes the calling script there and exits with its code.
 */
export async function insideSandbox(scriptUrl, main) {
  if (process.env.SMD_SANDBOX_DIR) return main();
  const child = spawn(join(ROOT, 'scripts/sandbox'), [process.execPath, fileURLToPath(scriptUrl), ...process.argv.slice(2)], { stdio: 'inherit' });
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
}
