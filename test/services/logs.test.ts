/** services.logs reads the unit's journal, both ways journald files it, with a cursor (real stack). */
import t from 'tap';
import { join } from 'node:path';
import { servicesFixture, type Svc } from '../helpers/services-fixture.js';

t.test('logs come from the journal with a cursor to continue', async (t) => {
  const { c, sb, install, img } = await servicesFixture(t);
  const op = await install({ image: img['writer-v1'] });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  const svc = await c.call<Svc>('services.get', { id: 'writer' });
  t.match(await sb.run('cat', [join(sb.unitDir, 'smd-writer.service')]), /^SyslogIdentifier=%N$/m);
  // journald does not always file a unit's stdout under _SYSTEMD_UNIT: a stream connected while
  // the child was still in the manager's cgroup is filed under init.scope. Make such a stream for
  // certain (a process of the service's uid in the manager's cgroup, named smd-writer) so that
  // both kinds are read every time, whichever one journald chose for the service itself.
  const cgroup = (await sb.run('cat', [`/proc/${sb.systemdPid}/cgroup`])).split('\n').find((l) => l.startsWith('0::'))!.slice(3);
  const procs = ['/sys/fs/cgroup/unified', '/sys/fs/cgroup/systemd', '/sys/fs/cgroup'].map((b) => `${b}${cgroup}/cgroup.procs`).join(' ');
  const injected = await sb.exec('sh', ['-c', `for f in ${procs}; do [ -e "$f" ] && echo $$ > "$f"; done; exec setpriv --reuid=${svc.uid} --regid=${svc.uid} --clear-groups systemd-cat -t smd-writer echo 'writer: filed under init.scope'`]);
  t.equal(injected.code, 0, injected.stderr);
  let logs = { entries: [] as { message: string; time: number; priority: number }[], cursor: null as string | null };
  const complete = () => logs.entries.filter((e) => /tick/.test(e.message)).length >= 2 && logs.entries.some((e) => e.message === 'writer: filed under init.scope');
  // The journal has no event smd could forward: bounded re-reads until both kinds are in.
  const deadline = Date.now() + 10_000;
  while (!complete() && Date.now() < deadline) {
    logs = await c.call('services.logs', { id: 'writer', lines: 50 });
    if (!complete()) await new Promise((r) => setTimeout(r, 200));
  }
  t.ok(logs.entries.filter((e) => /tick/.test(e.message)).length >= 2, `the service's own lines: ${JSON.stringify(logs.entries.map((e) => e.message))}`);
  t.ok(logs.entries.some((e) => e.message === 'writer: filed under init.scope'), 'the stream journald filed under init.scope');
  t.ok(logs.cursor);
  t.ok(logs.entries.every((e) => e.time > 0 && typeof e.message === 'string'));
  const more = await c.call<{ entries: unknown[]; cursor: string }>('services.logs', { id: 'writer', cursor: logs.cursor! });
  t.ok(more.entries.length < 50, 'continuing from the cursor does not repeat old entries');
  t.notOk(more.entries.some((e) => (e as { message: string }).message === 'writer: filed under init.scope'), 'not repeated after the cursor');
});
