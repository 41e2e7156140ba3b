import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, parseConfig } from '../../src/config/config.js';

t.test('every key has a default and derived paths follow dataDir/runDir', async (t) => {
  const c = parseConfig({});
  t.equal(c.dataDir, '/var/lib/smd');
  t.equal(c.socket, '/run/smd/smd.sock');
  t.equal(c.readOnlySocket, '/run/smd/smd-ro.sock');
  t.equal(c.database.path, '/var/lib/smd/smd.db');
  t.equal(c.systemd.bus, 'system');
  t.same(c.systemd.restart, { policy: 'on-failure', restartSec: 1, burst: 3, intervalSec: 300 });
  t.same(c.services.uidRange, [5000, 9999]);
  t.equal(c.traffic.sampleIntervalMs, 10_000);
  t.equal(c.traffic.period, 'day');
  t.equal(c.journal.alertPriority, 3);
  const moved = parseConfig({ dataDir: '/data', runDir: '/r', traffic: { period: 'hour' } });
  t.equal(moved.database.path, '/data/smd.db');
  t.equal(moved.socket, '/r/smd.sock');
  t.equal(moved.traffic.period, 'hour');
  t.equal(moved.traffic.persistIntervalMs, 60_000, 'a partly given section keeps its other defaults');
});

t.test('unknown keys and wrong types are refused, naming the key', async (t) => {
  t.throws(() => parseConfig({ dataDirr: '/x' }), /unknown key "dataDirr"/);
  t.throws(() => parseConfig({ traffic: { speed: 1 } }), /unknown key "traffic.speed"/);
  t.throws(() => parseConfig({ systemd: { startTimeoutMs: 'soon' } }), /"systemd.startTimeoutMs"/);
  t.throws(() => parseConfig({ systemd: { restart: { policy: 'sometimes' } } }), /"systemd.restart.policy"/);
  t.throws(() => parseConfig({ services: { uidRange: [9000, 5000] } }), /"services.uidRange"/);
  t.throws(() => parseConfig({ systemd: { bus: 'tcp:host=x' } }), /"systemd.bus"/);
  t.throws(() => parseConfig([]), /invalid configuration/);
});

t.test('a D-Bus address is accepted as bus', async (t) => {
  t.equal(parseConfig({ systemd: { bus: 'unix:path=/tmp/bus' } }).systemd.bus, 'unix:path=/tmp/bus');
});

t.test('a missing file is all defaults at the default path only, named or not', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'smd-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const defaultPath = join(dir, 'smd.json');
  t.equal(loadConfig(undefined, defaultPath).dataDir, '/var/lib/smd');
  t.equal(loadConfig(defaultPath, defaultPath).dataDir, '/var/lib/smd', 'the shipped unit names the default file');
  t.throws(() => loadConfig(join(dir, 'other.json'), defaultPath), /cannot read configuration/);
  writeFileSync(defaultPath, '{"dataDir": "/srv/smd"}');
  t.equal(loadConfig(defaultPath, defaultPath).dataDir, '/srv/smd');
});
