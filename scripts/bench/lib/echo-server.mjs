// The floor for RPC benchmarks: a minimal NDJSON server on a Unix socket that echoes each line.
import { createServer } from 'node:net';
import { unlinkSync } from 'node:fs';

const path = process.argv[2];
try { unlinkSync(path); } catch {}
createServer((s) => {
  let buf = '';
  s.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      s.write(buf.slice(0, nl + 1));
      buf = buf.slice(nl + 1);
    }
  });
  s.on('error', () => {});
}).listen(path, () => process.stdout.write('ready\n'));
