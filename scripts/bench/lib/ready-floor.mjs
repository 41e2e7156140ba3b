// The floor under smd's start-up time: a node process that loads the notify addon, says READY=1
// and waits for SIGTERM, doing nothing else. Spawned exactly like smd by the rpc benchmark.
import { createRequire } from 'node:module';

const unixDgram = createRequire(import.meta.url)('unix-dgram');
const socket = unixDgram.createSocket('unix_dgram');
const message = Buffer.from('READY=1');
socket.send(message, 0, message.length, process.env.NOTIFY_SOCKET, () => socket.close());
const keepAlive = setInterval(() => {}, 60_000);
process.once('SIGTERM', () => clearInterval(keepAlive));
