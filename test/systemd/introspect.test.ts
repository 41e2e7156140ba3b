/**
 * The daemon's bundle carries a stand-in for xml2js (scripts/bundle.mjs): smd never introspects,
 * but any peer on the bus may send Introspect to smd's connection, and dbus-next answers it with
 * the Builder. The answer must be a valid, empty node and the daemon must go on serving.
 */
import t from 'tap';
import { startDaemon } from '../helpers/daemon.js';
import { startSandbox } from '../helpers/sandbox.js';

t.test("a peer's Introspect of smd's bus connection is answered, and smd keeps serving", async (t) => {
  const sandbox = await startSandbox(t);
  const daemon = await startDaemon(t, { sandbox });
  const c = await daemon.client();
  t.match(await c.call('system.health'), { checks: { systemd: { ok: true } } }, 'smd is connected to the bus');

  // smd's unique name: the connection whose PID is the daemon's.
  const names = JSON.parse(await sandbox.run('busctl', ['--user', 'list', '--json=short'])) as { name: string; pid: number }[];
  const own = names.find((n) => n.pid === daemon.proc.pid && n.name.startsWith(':'));
  t.ok(own, `smd's connection is on the bus: ${JSON.stringify(names.filter((n) => n.name.startsWith(':')).map((n) => [n.name, n.pid]))}`);
  const out = await sandbox.run('busctl', ['--user', 'call', own!.name, '/', 'org.freedesktop.DBus.Introspectable', 'Introspect']);
  t.match(out, /^s ".*<node\/>"\s*$/s, `the answer is an empty node: ${out.trim()}`);

  t.match(await c.call('system.health'), { checks: { systemd: { ok: true } } }, 'still connected afterwards');
  t.equal(daemon.proc.exitCode, null, 'still running');
});
