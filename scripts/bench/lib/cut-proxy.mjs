/**
 * A TCP proxy on 127.0.0.1 in front of a plain-HTTP server, for download benchmarks: it counts
 * every byte the server sends to the client, records each request (line and Range header, read
 * from the client→server bytes of HTTP/1.1 keep-alive connections, one request at a time as
 * undici sends them), and can cut once: the connection carrying the response to a request whose
 * path ends with `cut.pathEndsWith` (without a Range header) is ended when that response has
 * passed `cut.afterBytes` bytes. Every later connection passes untouched.
 *
 * `cut.how`: 'fin' (default) stops forwarding and ends the connection after what was handed
 * over, so every byte counted reached the client; 'rst' resets it, which also drops what sits
 * unsent in the proxy's socket send buffer (on loopback up to MBs, checked): counted, never
 * delivered.
 */
import net from 'node:net';

/**
 * @param {{host: string, port: number}} target
 * @param {{pathEndsWith: string, afterBytes: number, how?: 'fin' | 'rst'} | null} cut
 */
export function startCutProxy(target, cut = null) {
  const stats = { serverToClient: 0, clientToServer: 0, connections: 0, requests: [], cutAt: null };
  const sockets = new Set();
  const server = net.createServer((client) => {
    stats.connections++;
    const upstream = net.connect(target.port, target.host);
    sockets.add(client);
    sockets.add(upstream);
    client.on('close', () => sockets.delete(client));
    upstream.on('close', () => sockets.delete(upstream));
    const conn = { head: '', current: null, sinceRequest: 0 };
    client.on('data', (d) => {
      stats.clientToServer += d.length;
      conn.head += d.toString('latin1');
      for (let end = conn.head.indexOf('\r\n\r\n'); end >= 0; end = conn.head.indexOf('\r\n\r\n')) {
        const block = conn.head.slice(0, end);
        conn.head = conn.head.slice(end + 4);
        const [line, ...headers] = block.split('\r\n');
        const [method, path] = line.split(' ');
        const range = headers.find((h) => /^range:/i.test(h))?.replace(/^range:\s*/i, '') ?? null;
        conn.current = { method, path, range };
        conn.sinceRequest = 0;
        stats.requests.push({ method, path, range });
      }
    });
    upstream.on('data', (d) => {
      // pipe() below registered first: this chunk has been handed to the client already.
      stats.serverToClient += d.length;
      conn.sinceRequest += d.length;
      const c = conn.current;
      if (cut && !stats.cutAt && c && c.range === null && c.path?.endsWith(cut.pathEndsWith) && conn.sinceRequest >= cut.afterBytes) {
        stats.cutAt = { path: c.path, responseBytes: conn.sinceRequest };
        upstream.unpipe(client);
        upstream.destroy();
        if (cut.how === 'rst') client.resetAndDestroy();
        else client.end(); // what was handed over still reaches the client, then its FIN

      }
    });
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  });
  return new Promise((res, rej) => {
    server.once('error', rej);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      res({
        host: `127.0.0.1:${port}`,
        port,
        stats,
        close() {
          for (const s of sockets) s.destroy();
          return new Promise((r) => server.close(() => r()));
        },
      });
    });
  });
}
