/**
 * A service crash reaches the fleet within 2 s (issue 17): the real smd against a real Mosquitto
 * in the sandbox, a service installed, its main process SIGKILLed through systemd; the `events`
 * message of the crash and a `reported` that shows the service failed both arrive within 2 s of
 * the kill, measured by the test's subscriber from just before the kill (report debounce at its
 * defaults). Then systemd restarts it, and a report says it runs again.
 */
import t from 'tap';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { buildExampleImages, startDaemon, tempDir } from '../helpers/daemon.js';
import { startMosquitto, type Received } from '../helpers/mosquitto.js';
import { startSandbox } from '../helpers/sandbox.js';

interface Report {
  services: { id: string; state: number; status: number }[];
}
interface FleetEvent {
  id: number;
  type: string;
  data: { id?: string; state?: number; status?: number; reason?: string };
}
const json = <T>(m: Received) => JSON.parse(m.text) as T;

t.test('a service crash shows up in events and reported within 2 s', async (t) => {
  const sb = await startSandbox(t);
  const dir = tempDir(t);
  const broker = await startMosquitto(t, sb, dir);
  const img = buildExampleImages(join(dir, 'images')).byName;
  const passwordFile = join(dir, 'smd-password');
  writeFileSync(passwordFile, `${broker.password}\n`, { mode: 0o600 });
  const base = 'smd/crash1';
  const topic = (n: string) => `${base}/${n}`;
  const fleet = { url: `mqtt://127.0.0.1:${broker.port}`, deviceId: 'crash1', username: broker.user, passwordFile };
  // restartSec 3: systemd brings it back after the window the report must fall in.
  const d = await startDaemon(t, { sandbox: sb, config: { fleet, systemd: { restart: { restartSec: 3 } } } });
  t.teardown(() => {
    if (!t.passing()) console.error(`--- smd output (tail) ---\n${d.output().slice(-6000)}\n--- mosquitto ---\n${broker.output().slice(-3000)}`);
  });
  const c = await d.client();
  const watch = await broker.client([`${base}/#`]);
  await watch.waitFor((m) => m.topic === topic('online') && m.text === 'true', 20_000, 'online true');
  const op = await c.call<{ state: string; error: unknown }>('services.install', { image: img['hello-http-v1']!, wait: true });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  const running = (r: Report) => r.services.find((s) => s.id === 'hello-http')?.state === 1;
  await watch.waitFor((m) => m.topic === topic('reported') && running(json<Report>(m)), 10_000, 'a report with hello-http running');
  const mark = watch.messages.length;

  const killedAt = Date.now();
  await sb.run('systemctl', ['--user', 'kill', '-s', 'KILL', 'smd-hello-http.service']);
  const after = (pred: (m: Received) => boolean) => (m: Received) => watch.messages.indexOf(m) >= mark && pred(m);
  const crashEvent = await watch.waitFor(
    after((m) => m.topic === topic('events') && ((e) => e.type === 'service' && e.data.id === 'hello-http' && e.data.state === 2)(json<FleetEvent>(m))),
    5000,
    'the crash on events',
  );
  const crashReport = await watch.waitFor(
    after((m) => m.topic === topic('reported') && json<Report>(m).services.some((s) => s.id === 'hello-http' && s.state === 2 && s.status === 1)),
    5000,
    'a report with hello-http failed',
  );
  const eventMs = crashEvent.at - killedAt;
  const reportMs = crashReport.at - killedAt;
  t.ok(eventMs <= 2000, `the crash event arrived ${eventMs} ms after the kill (<= 2000): ${crashEvent.text}`);
  t.ok(reportMs <= 2000, `the report arrived ${reportMs} ms after the kill (<= 2000)`);
  t.match(json<FleetEvent>(crashEvent).data, { reason: 'signal' }, 'the event says why');
  // systemd restarts it (restartSec 3): the fleet hears that too.
  await watch.waitFor(after((m) => m.topic === topic('reported') && running(json<Report>(m))), 15_000, 'a report with hello-http running again');
  t.equal((await c.call<{ live: { activeState: string } }>('services.get', { id: 'hello-http' })).live.activeState, 'active');
});
