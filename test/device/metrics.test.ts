/**
 * Metrics on a booted device with the shipped unit: `metrics.textfile` set in /etc/smd/smd.json,
 * Debian's prometheus-node-exporter (the host's binary, in the device's network namespace) reads
 * the directory with its textfile collector only, and its scrape over the device's loopback has
 * smd's series, parsed without error and equal to what monitoring.get says.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildExampleImages } from '../helpers/daemon.js';
import { startDevice } from '../helpers/device.js';
import { execBounded } from '../helpers/sandbox.js';

interface Op {
  state: string;
  error: { code: string; message: string } | null;
}
interface Snapshot {
  sampledAt: number | null;
  services: { serviceId: string; memory: number | null; tasks: number | null }[];
}

const PORT = 9100;
const images = mkdtempSync(join(tmpdir(), 'smd-device-metrics-'));
t.teardown(() => rmSync(images, { recursive: true, force: true }));
const img = buildExampleImages(images, ['--version', '1']).byName;

const device = await startDevice(t);
device.copyIn(img['writer-v1']!, '/opt/images/writer-v1.tar');
await device.run('mkdir', ['-p', '/var/lib/node-exporter/textfile']);
await device.run('tee', ['/etc/smd/smd.json'], { input: JSON.stringify({ metrics: { textfile: '/var/lib/node-exporter/textfile/smd.prom' } }) });
await device.run('systemctl', ['restart', 'smd']);
await device.waitActive('smd');
const c = await device.client();

// node_exporter of this host, in the device's network namespace, reading the device's directory.
const exporter = spawn(
  'nsenter',
  ['-t', String(device.pid1), '-n', '--', 'prometheus-node-exporter', '--collector.disable-defaults', '--collector.textfile', `--collector.textfile.directory=${device.hostPath('/var/lib/node-exporter/textfile')}`, `--web.listen-address=127.0.0.1:${PORT}`],
  { stdio: 'ignore' },
);
t.teardown(() => void exporter.kill('SIGKILL'));

async function scrape(): Promise<string> {
  for (const deadline = Date.now() + 15_000; ; await new Promise((r) => setTimeout(r, 200))) {
    const r = await execBounded('nsenter', ['-t', String(device.pid1), '-n', '--', 'curl', '-sf', `http://127.0.0.1:${PORT}/metrics`], { timeoutMs: 10_000 });
    if (r.code === 0) return r.stdout;
    if (Date.now() > deadline) throw new Error(`node_exporter did not answer within 15 s: ${r.stderr}`);
  }
}
const value = (text: string, series: string) => {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? null : Number(line.slice(series.length + 1));
};

t.test('node_exporter scrapes smd’s series from the textfile, and they match monitoring.get', async (t) => {
  const op = await device.smctl<Op>(['services', 'install', '/opt/images/writer-v1.tar'], { timeoutMs: 60_000 });
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  // A fresh sample writes the file; the scrape then reads that sample.
  const snap = await c.call<Snapshot>('monitoring.get', { fresh: true });
  const text = await scrape();
  t.equal(value(text, 'node_textfile_scrape_error'), 0, 'node_exporter parsed the file');
  t.match(text, /^smd_build_info\{.*\} 1$/m);
  const writer = snap.services.find((s) => s.serviceId === 'writer')!;
  const sampledAt = value(text, 'smd_monitoring_last_sample_timestamp_seconds');
  t.ok(sampledAt !== null && sampledAt * 1000 >= snap.sampledAt! - 1, 'the scrape is of that sample or a later one');
  if (sampledAt !== null && Math.round(sampledAt * 1000) === snap.sampledAt) {
    t.equal(value(text, 'smd_service_memory_bytes{service="writer"}'), writer.memory, 'memory as monitoring.get says');
    t.equal(value(text, 'smd_service_tasks{service="writer"}'), writer.tasks, 'tasks as monitoring.get says');
  } else {
    t.ok((value(text, 'smd_service_memory_bytes{service="writer"}') ?? 0) > 0, 'memory of a later sample');
  }
  t.equal(value(text, 'smd_service_active{service="writer"}'), 1);
});
