/** The pure parts of the traffic domain split out of the monitor, and the networking glue with fakes. */
import t from 'tap';
import { resumeTotal } from '../../src/traffic/store.js';
import { totalOf } from '../../src/traffic/counters.js';
import { limitMessage, limitPayload } from '../../src/traffic/limit-alerts.js';
import { ServiceNetworks, trafficLimits, trafficTotals } from '../../src/traffic/networking.js';
import type { TrafficRow } from '../../src/traffic/types.js';
import { createLogger } from '../../src/log.js';

t.test('resumeTotal: a stored row of this period continues, anything else starts at 0', async (t) => {
  const start = 1_000;
  const none = resumeTotal(undefined, start);
  t.same({ base: none.base, resume: none.resume }, { base: 0n, resume: 0n }, 'no row: the whole counter is new traffic');
  const same = resumeTotal({ chain: 'c', value: 500n, periodStart: 1_000n, counter: '42' }, start);
  t.same({ base: same.base, resume: same.resume, periodStart: same.periodStart }, { base: 500n, resume: 42n, periodStart: start });
  t.equal(totalOf(same), 500n);
  const older = resumeTotal({ chain: 'c', value: 500n, periodStart: 10n, counter: '42' }, start);
  t.same({ base: older.base, resume: older.resume }, { base: 0n, resume: null }, 'an older period starts at 0, counter unknown');
  const junk = resumeTotal({ chain: 'c', value: 7n, periodStart: 1_000n, counter: 'x1' }, start);
  t.same({ base: junk.base, resume: junk.resume }, { base: 7n, resume: null }, 'a malformed counter is unknown');
  t.equal(resumeTotal({ chain: 'c', value: -5n, periodStart: 1_000n, counter: null }, start).base, 0n, 'never negative');
});

t.test('limit alert text and payload', async (t) => {
  const row: TrafficRow = { chain: 'SMD_X_IN', serviceId: 'a.b', direction: 'in', bytes: 2048, limit: 1024, blocked: true, periodStart: 5 };
  t.equal(limitMessage(row, 'day'), 'service a.b: download limit of 1024 bytes per day reached (2048 bytes); download blocked until the next period');
  t.match(limitMessage({ ...row, direction: 'out' }, 'month'), /^service a\.b: upload limit .* per month .* upload blocked/);
  t.same(limitPayload(row), { chain: 'SMD_X_IN', direction: 'in', bytes: 2048, limit: 1024, periodStart: 5 });
});

t.test('trafficLimits and trafficTotals', async (t) => {
  t.same(trafficLimits({ dlLimit: 5 }), { ulLimit: null, dlLimit: 5, ulSpeed: null, dlSpeed: null });
  const rows = [
    { chain: 'S_IN', serviceId: null, direction: 'in', bytes: 1, limit: null, blocked: false, periodStart: 0 },
    { chain: 'A_IN', serviceId: 'a', direction: 'in', bytes: 10, limit: null, blocked: false, periodStart: 0 },
    { chain: 'A_OUT', serviceId: 'a', direction: 'out', bytes: 20, limit: null, blocked: false, periodStart: 0 },
  ] as TrafficRow[];
  t.same([...trafficTotals({ get: () => rows })], [['a', { upload: 20, download: 10 }]]);
});

t.test('ServiceNetworks: accounting failures never fail the service; health joins both', async (t) => {
  const calls: string[] = [];
  const lines: string[] = [];
  let trafficOk = true;
  const networks = new ServiceNetworks({
    logger: createLogger('debug', (l) => lines.push(l)),
    nameservers: () => ['192.0.2.53'],
    network: {
      ensureBridge: async () => {
        calls.push('bridge');
        throw new Error('no bridge');
      },
      ensureServiceNetwork: async (id: string) => {
        calls.push(`net ${id}`);
        return { serviceId: id, address: '172.30.0.2', netnsName: 'ns', netnsPath: '/run/netns/ns', hostVeth: 'veth0' } as never;
      },
      removeServiceNetwork: async (id: string) => void calls.push(`unnet ${id}`),
      addressOf: () => '172.30.0.2',
      health: () => ({ ok: false, detail: 'no bridge' }),
    },
    traffic: {
      start: async () => void calls.push('traffic'),
      addService: async (id: string, address: string, opts: unknown) => {
        calls.push(`account ${id} ${address} ${JSON.stringify(opts)}`);
        throw new Error('iptables broke');
      },
      removeService: async () => {
        throw new Error('iptables broke');
      },
      updateLimits: async (id: string, l: unknown) => void calls.push(`limits ${id} ${JSON.stringify(l)}`),
      health: () => ({ ok: trafficOk, detail: trafficOk ? 'fine' : 'iptables unavailable' }),
    },
  });
  await networks.start();
  t.same(calls.splice(0), ['traffic', 'bridge'], 'accounting first, then the bridge; a bridge failure is logged');
  t.same(await networks.ensure('a', { dlLimit: 9 }), { netnsPath: '/run/netns/ns', address: '172.30.0.2', nameservers: ['192.0.2.53'] }, "the device's resolvers by default");
  t.match(calls.splice(0), ['net a', /^account a 172\.30\.0\.2 .*"dlLimit":9.*"hostVeth":"veth0","netnsName":"ns"/]);
  await networks.remove('a');
  t.same(calls.splice(0), ['unnet a'], 'the network goes even when the chains could not');
  await networks.updateLimits('a', { ulSpeed: 3 });
  t.same(calls.splice(0), ['limits a {"ulLimit":null,"dlLimit":null,"ulSpeed":3,"dlSpeed":null}']);
  t.equal(networks.address('a'), '172.30.0.2');
  t.same(networks.health(), { ok: false, detail: 'no bridge' });
  trafficOk = false;
  t.same(networks.health(), { ok: false, detail: 'iptables unavailable; no bridge' });
  t.equal(lines.length, 3, 'bridge, accounting and chain removal failures logged');
});
