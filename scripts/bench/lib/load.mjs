// Closed-loop load generator, run as its own process so it does not share the server's event
// loop: N connections, each sends one NDJSON request and waits for its reply before the next.
// argv: socketPath connections durationMs requestJSON ; prints {requests, seconds, latenciesMs:[...]}.
import { createConnection } from 'node:net';

const [path, connections, durationMs, request] = process.argv.slice(2);
const line = request + '\n';
const latencies = [];
let requests = 0;
const stopAt = Date.now() + Number(durationMs);

function runOne() {
  return new Promise((resolve, reject) => {
    const s = createConnection(path);
    let buf = '';
    let sentAt = 0;
    const send = () => {
      sentAt = performance.now();
      s.write(line);
    };
    s.on('connect', send);
    s.on('error', (err) => (Date.now() < stopAt ? reject(err) : resolve()));
    s.on('data', (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        buf = buf.slice(nl + 1);
        latencies.push(performance.now() - sentAt);
        requests++;
        if (Date.now() < stopAt) send();
        else {
          s.end();
          resolve();
        }
      }
    });
  });
}

const started = performance.now();
await Promise.all(Array.from({ length: Number(connections) }, runOne));
const seconds = (performance.now() - started) / 1000;
process.stdout.write(JSON.stringify({ requests, seconds, latenciesMs: latencies }));
