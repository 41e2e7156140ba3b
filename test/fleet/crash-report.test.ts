/**
 * A service crash reaches the fleet within 2 s (issue 17): the real smd against a real Mosquitto
 * in the sandbox, a service installed, its main process SIGKILLed through systemd; the `events`
 * message of the crash and a `reported` that shows the service failed both arrive within 2 s of
 * the kill, measured by the test's subscriber from just before the kill (report debounce at its
 * defaults). Then systemd restarts it, and a report says it runs again.
 */
import t from 'tap';
import { startFleetDevice } from '../helpers/fleet.js';
import type { Received } from '../helpers/mosquitto.js';

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
  // restartSec 3: systemd brings it back after the window the report must fall in.
  const { sb, client: c, watch, topic } = await startFleetDevice(t, 'crash1', { config: { systemd: { restart: { restartSec: 3 } } } });
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
  // The report counts a unit still `activating` (its start job running) as running: wait for
  // systemd to say active, not one read that may fall inside the start job.
  const live = async () => (await c.call<{ live: { activeState: string } }>('services.get', { id: 'hello-http' })).live.activeState;
  let seen = await live();
  for (const deadline = Date.now() + 10_000; seen === 'activating' && Date.now() < deadline; seen = await live()) await new Promise((r) => setTimeout(r, 50));
  t.equal(seen, 'active', 'systemd has it active again');
});
