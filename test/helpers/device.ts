/**
 * A booted device for one test file: `scripts/device --hold` (a Debian 12 root file system of its
 * own, systemd as PID 1 in a container, smd installed as a user would and its shipped unit
 * enabled). Commands run inside through nsenter; smd's sockets are reached from here through
 * /proc/<PID 1>/root. Power cuts, boots and reboots go through the script, which keeps track of
 * every PID and tears everything down when the test ends.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { RpcClient } from '../../src/cli/client.js';
import { execBounded, succeeded, type ExecResult } from './sandbox.js';
import { startHold } from '../../scripts/lib/hold.mjs';

export const ROOT = resolve(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '../..');
export const DEVICE_SCRIPT = resolve(ROOT, 'scripts/device');

interface Tap {
  teardown(fn: () => unknown): void;
}

interface DeviceInfo {
  dir: string;
  /** The device's root file system, as this process sees it. */
  root: string;
  name: string;
  pid1: number;
  nspawnPid: number;
  bootMs: number;
  path: string;
}

export interface Device extends DeviceInfo {
  /** Run a program inside the device (all its namespaces, a clean environment); never throws on exit code. */
  exec(cmd: string, args?: readonly string[], opts?: { timeoutMs?: number; input?: string }): Promise<ExecResult>;
  /** Like exec but rejects unless the exit code is 0. */
  run(cmd: string, args?: readonly string[], opts?: { timeoutMs?: number; input?: string }): Promise<string>;
  /** smctl inside the device with --json; resolves with the parsed output, rejects on a non-zero exit. */
  smctl<T = unknown>(args: readonly string[], opts?: { timeoutMs?: number }): Promise<T>;
  /** A JSON-RPC client on smd's control socket inside the device. */
  client(): Promise<RpcClient>;
  /** A path inside the device, as this process sees it. */
  hostPath(devicePath: string): string;
  /** Copy a file of this host into the device; returns its path inside. */
  copyIn(hostFile: string, devicePath: string): string;
  /** SIGKILL of the container's PID 1: everything inside dies at once. */
  powerCut(): Promise<void>;
  /** Boot the same root file system again (after a power cut or poweroff); returns the boot time. */
  boot(): Promise<number>;
  /** `systemctl reboot` inside, wait for the container to end, boot it again. */
  reboot(): Promise<number>;
  /** Waits (bounded) until `systemctl is-active UNIT` prints `state`. */
  waitActive(unit: string, state?: string, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startDevice(t: Tap, opts: { startTimeoutMs?: number } = {}): Promise<Device> {
  // The first run builds the cached root file system with mmdebstrap (about a minute).
  const hold = await startHold<DeviceInfo>(DEVICE_SCRIPT, { startTimeoutMs: opts.startTimeoutMs ?? 240_000, stopTimeoutMs: 30_000, what: 'device' });
  const clients: RpcClient[] = [];
  const stop = async () => {
    for (const c of clients.splice(0)) c.close();
    await hold.stop();
  };
  t.teardown(stop);
  const info = hold.info;
  const control = async (cmd: string) => (await hold.control(cmd, 120_000)) as unknown as { pid1?: number; bootMs?: number };

  const env = { PATH: info.path, LANG: 'C.UTF-8' };
  const device: Device = {
    ...info,
    exec(cmd, args = [], o = {}) {
      const argv = ['-t', String(device.pid1), '-a', '--', 'env', '-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), cmd, ...args];
      return execBounded('nsenter', argv, { timeoutMs: o.timeoutMs ?? 30_000, ...(o.input !== undefined ? { input: o.input } : {}) });
    },
    run: (cmd, args = [], o = {}) => succeeded(device.exec(cmd, args, o), cmd, args),
    async smctl<T>(args: readonly string[], o: { timeoutMs?: number } = {}) {
      const r = await device.exec('smctl', ['--json', ...args], o);
      if (r.code !== 0) throw new Error(`smctl ${args.join(' ')} exited ${r.code}: ${(r.stderr || r.stdout).trim()}`);
      return JSON.parse(r.stdout) as T;
    },
    async client() {
      const c = await RpcClient.connect(`/proc/${device.pid1}/root/run/smd/smd.sock`);
      clients.push(c);
      return c;
    },
    hostPath: (p) => join(info.root, p),
    copyIn(hostFile, devicePath) {
      mkdirSync(dirname(device.hostPath(devicePath)), { recursive: true });
      copyFileSync(hostFile, device.hostPath(devicePath));
      return devicePath;
    },
    async powerCut() {
      for (const c of clients.splice(0)) c.close();
      await control('power-cut');
      device.pid1 = 0;
    },
    async boot() {
      const r = await control('boot');
      device.pid1 = r.pid1!;
      return r.bootMs!;
    },
    async reboot() {
      for (const c of clients.splice(0)) c.close();
      const r = await control('reboot');
      device.pid1 = r.pid1!;
      return r.bootMs!;
    },
    async waitActive(unit, state = 'active', timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      let last = '';
      while (Date.now() < deadline) {
        last = (await device.exec('systemctl', ['is-active', unit])).stdout.trim();
        if (last === state) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`${unit} is ${last}, not ${state}, after ${timeoutMs} ms`);
    },
    stop,
  };
  return device;
}

export const REMOTE_IP = '198.51.100.2'; // TEST-NET-2, only inside the device's own namespaces

/**
 * A remote host inside the device: its own network namespace `name`, one veth away from the
 * device (198.51.100.1 ↔ REMOTE_IP), outside traffic.localSubnets. `holderPid` is a process of
 * this host in that namespace: test servers (a registry) listen there through it, running the
 * host's programs. The namespace lives as long as the holder; after a power cut or a reboot the
 * device's end of the link is gone, and `reconnect()` makes a new one.
 */
export async function addRemoteHost(t: Tap, device: Device, name = 'remote'): Promise<{ name: string; ip: string; holderPid: number; reconnect(): Promise<void> }> {
  await device.run('ip', ['netns', 'add', name]);
  // /run is the device's own tmpfs: seen from here through its PID 1.
  const nsPath = `/proc/${device.pid1}/root/run/netns/${name}`;
  const holder = spawn('nsenter', [`--net=${nsPath}`, '--', 'sleep', 'infinity'], { stdio: 'ignore' });
  t.teardown(() => void holder.kill('SIGKILL'));
  // Ready once the holder is in that namespace (nsenter joins it before it execs sleep).
  const want = statSync(nsPath).ino;
  for (const deadline = Date.now() + 5000; ; await new Promise((r) => setTimeout(r, 20))) {
    try {
      if (holder.pid && statSync(`/proc/${holder.pid}/ns/net`).ino === want) break;
    } catch {
      // not started yet
    }
    if (Date.now() > deadline) throw new Error(`the holder of netns ${name} did not join it within 5 s`);
  }
  const holderPid = holder.pid!;
  // From this host's PID namespace, so that `netns <holderPid>` names the holder.
  const inDevice = (args: string[]) => succeeded(execBounded('nsenter', ['-t', String(device.pid1), '-n', 'ip', ...args], { timeoutMs: 10_000 }), 'ip', args);
  const inRemote = (args: string[]) => succeeded(execBounded('nsenter', ['-t', String(holderPid), '-n', 'ip', ...args], { timeoutMs: 10_000 }), 'ip', args);
  const connect = async () => {
    await inDevice(['link', 'add', 'wan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(holderPid)]);
    await inDevice(['addr', 'add', '198.51.100.1/24', 'dev', 'wan0']);
    await inDevice(['link', 'set', 'wan0', 'up']);
    await inRemote(['addr', 'add', `${REMOTE_IP}/24`, 'dev', 'eth0']);
    await inRemote(['link', 'set', 'eth0', 'up']);
    await inRemote(['link', 'set', 'lo', 'up']);
    await inRemote(['route', 'replace', 'default', 'via', '198.51.100.1']);
  };
  await connect();
  return { name, ip: REMOTE_IP, holderPid, reconnect: connect };
}
