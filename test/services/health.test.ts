/** system.health sees the sandbox's systemd and journal (real stack). */
import t from 'tap';
import { servicesFixture } from '../helpers/services-fixture.js';

t.test('health sees systemd and the journal', async (t) => {
  const { c } = await servicesFixture(t);
  type Health = { checks: Record<string, { ok: boolean; detail: string }> };
  let h = await c.call<Health>('system.health');
  t.equal(h.checks.systemd!.ok, true, h.checks.systemd!.detail);
  // The journal follower starts right after READY=1 and has no event of its own: bounded re-reads.
  for (let i = 0; i < 200 && !h.checks.journal!.ok; i++) {
    await new Promise((r) => setTimeout(r, 25));
    h = await c.call<Health>('system.health');
  }
  t.equal(h.checks.journal!.ok, true, h.checks.journal!.detail);
});
