/** ServiceRestorer with fake services and systemd: no daemon, no root. */
import t from 'tap';
import { EventEmitter } from 'node:events';
import { ServiceRestorer, type RestoreServices } from '../../src/daemon/restore.js';
import { createLogger } from '../../src/log.js';
import type { SystemdHealth } from '../../src/systemd/types.js';

class FakeSystemd extends EventEmitter {
  ok = true;
  health(): SystemdHealth {
    return { ok: this.ok, detail: this.ok ? 'connected' : 'down', bus: this.ok ? 'up' : 'down', manager: this.ok, reconnects: 0 };
  }
}

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

const tick = () => new Promise((r) => setImmediate(r));

t.test('a throw from the TTL sweep on the timer is logged, not an uncaught exception', async (t) => {
  const lines: string[] = [];
  let sweeps = 0;
  const services: RestoreServices = {
    reconcile: async () => ({}),
    resume: async () => {},
    sweepTtl: () => {
      if (++sweeps > 1) throw new Error('sweep broke');
    },
  };
  let prunes = 0;
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown) => uncaught.push(err);
  // tap installs its own handler; ours records what would have killed the daemon.
  process.prependListener('uncaughtException', onUncaught);
  t.teardown(() => process.off('uncaughtException', onUncaught));
  const r = new ServiceRestorer({
    services,
    systemd: new FakeSystemd() as never,
    operations: { prune: () => prunes++ },
    logger: createLogger('debug', (l) => lines.push(l)),
    sweepIntervalMs: 5,
  });
  t.teardown(() => r.stop());
  await r.start([]);
  const deadline = Date.now() + 5000;
  while (sweeps < 3 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 5));
  r.stop();
  t.ok(sweeps >= 3, 'the timer keeps sweeping after a throw');
  t.same(uncaught, [], 'no uncaught exception');
  t.ok(prunes >= 3, 'the prune still runs when the sweep threw');
  t.ok(lines.some((l) => /housekeeping failed/.test(l) && /sweep broke/.test(l)), 'the throw is logged');
});

t.test('a resync while the reconciliation runs waits for it; resumes never overlap', async (t) => {
  const systemd = new FakeSystemd();
  systemd.ok = false; // reconcile at the first resync
  const log: string[] = [];
  let running = 0;
  let overlap = false;
  const gates: ReturnType<typeof deferred>[] = [];
  const work = (name: string) => async () => {
    if (running > 0) overlap = true;
    running++;
    log.push(`${name} start`);
    const g = deferred();
    gates.push(g);
    await g.promise;
    log.push(`${name} end`);
    running--;
  };
  const services: RestoreServices = { reconcile: work('reconcile'), resume: work('resume'), sweepTtl: () => {} };
  const r = new ServiceRestorer({ services, systemd: systemd as never, operations: { prune: () => 0 }, logger: createLogger('error', () => {}) });
  t.teardown(() => r.stop());
  await r.start([]);
  systemd.emit('resynced', []);
  await tick();
  t.same(log, ['reconcile start']);
  systemd.emit('resynced', []); // systemd came and went again while reconciling
  await tick();
  t.same(log, ['reconcile start'], 'the resume waits for the reconciliation');
  gates[0]!.resolve();
  const deadline = Date.now() + 2000;
  while (log.length < 3 && Date.now() < deadline) await tick();
  t.same(log, ['reconcile start', 'reconcile end', 'resume start'], 'then it runs');
  gates[1]!.resolve();
  while (log.length < 4 && Date.now() < deadline) await tick();
  t.notOk(overlap, 'never two at once');
});

t.test('a resync during the start-up reconciliation is not lost: it resumes after it', async (t) => {
  const systemd = new FakeSystemd();
  const log: string[] = [];
  const gate = deferred();
  const services: RestoreServices = {
    reconcile: async () => {
      log.push('reconcile start');
      await gate.promise;
      log.push('reconcile end');
      return {};
    },
    resume: async () => {
      log.push('resume');
    },
    sweepTtl: () => {},
  };
  const r = new ServiceRestorer({ services, systemd: systemd as never, operations: { prune: () => 0 }, logger: createLogger('error', () => {}) });
  t.teardown(() => r.stop());
  const started = r.start([]);
  await tick();
  systemd.emit('resynced', []);
  await tick();
  t.same(log, ['reconcile start']);
  gate.resolve();
  await started;
  const deadline = Date.now() + 2000;
  while (log.length < 3 && Date.now() < deadline) await tick();
  t.same(log, ['reconcile start', 'reconcile end', 'resume']);
});
