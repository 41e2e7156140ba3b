import { resolve } from 'node:path';
import { Option } from 'commander';
import { EXIT, globals, imageArgument, out, program, runOperation, withClient } from './common.js';
import { bytes, duration, keyValues, table, time } from './format.js';

const STATE_NAMES = ['stopped', 'running', 'failed'];

interface Svc {
  id: string;
  version: number;
  state: number;
  status: number;
  unit: string;
  startat: number | null;
  layers: string[];
  settings: Record<string, unknown>;
  signedBy?: string | null;
  live?: { activeState: string; subState: string; mainPid: number | null; since: number | null; restarts: number | null; memoryCurrent: number | null } | null;
}

const row = (s: Svc) => ({ id: s.id, version: s.version, state: STATE_NAMES[s.state] ?? s.state, status: s.status === 0 ? 'ok' : 'error', started: time(s.startat), layers: s.layers.length });

type PolicyView = {
  exposedPorts?: { port: number; protocol: string; hostPort?: number; interfaces?: string[] }[];
  trafficRules?: { id: string; priority: number; direction: string; action: string; filter?: { cidr?: string; protocol?: string; ports?: number[] } }[];
  egress?: string;
  dnsRules?: { domain: string; ip: string }[];
  nameservers?: string[];
};

/** The network policy as readable lines: `8088/tcp -> 8080`, `10 out allow tcp 203.0.113.0/24:80,443`, ... */
export function policyLines(settings: Record<string, unknown>): Record<string, string> {
  const p = settings as PolicyView;
  return {
    ports: p.exposedPorts?.length ? p.exposedPorts.map((e) => `${e.hostPort ?? e.port}/${e.protocol} -> ${e.port}${e.interfaces ? ` (${e.interfaces.join(',')})` : ''}`).join(', ') : '-',
    egress: p.egress ?? 'allow',
    rules: p.trafficRules?.length
      ? [...p.trafficRules]
          .sort((a, b) => a.priority - b.priority || a.id.localeCompare(b.id))
          .map((r) => `${r.priority} ${r.id}: ${r.direction} ${r.action} ${r.filter?.protocol ?? 'all'} ${r.filter?.cidr ?? 'any'}${r.filter?.ports ? ':' + r.filter.ports.join(',') : ''}`)
          .join('; ')
      : '-',
    dns: p.dnsRules?.length ? p.dnsRules.map((r) => `${r.domain}=${r.ip}`).join(', ') : '-',
    ...(p.nameservers ? { nameservers: p.nameservers.join(', ') } : {}),
  };
}

/** Parses `key=value` settings; values are JSON when they parse, strings otherwise. */
function parseSettings(pairs: string[]): Record<string, unknown> {
  const settings: Record<string, unknown> = {};
  for (const pair of pairs) {
    const i = pair.indexOf('=');
    if (i <= 0) throw new Error(`expected key=value, got ${JSON.stringify(pair)}`);
    const raw = pair.slice(i + 1);
    try {
      settings[pair.slice(0, i)] = JSON.parse(raw);
    } catch {
      settings[pair.slice(0, i)] = raw;
    }
  }
  return settings;
}

const collect = (v: string, acc: string[]) => [...acc, v];

export function registerServiceCommands(): void {
  const cmd = program.command('services').description('installed services');
  cmd
    .command('ls', { isDefault: true })
    .description('installed services and their state')
    .action(() =>
      withClient(async (c) => {
        const list = await c.call<Svc[]>('services.list');
        out(list, () => table(list.map(row), ['id', 'version', 'state', 'status', 'started', 'layers']));
      }),
    );
  cmd
    .command('get <id>')
    .description("one service with systemd's live view")
    .action((id: string) =>
      withClient(async (c) => {
        const s = await c.call<Svc>('services.get', { id });
        out(s, () => {
          const live = s.live
            ? { active: `${s.live.activeState}/${s.live.subState}`, mainPid: s.live.mainPid, since: time(s.live.since), uptime: s.live.since ? duration(Date.now() - s.live.since) : '-', restarts: s.live.restarts, memory: s.live.memoryCurrent === null ? '-' : bytes(s.live.memoryCurrent) }
            : { active: 'systemd unreachable' };
          return keyValues({ ...row(s), unit: s.unit, signedBy: s.signedBy ?? '-', ...live, ...policyLines(s.settings), settings: s.settings, layers: s.layers.join(' ') });
        });
      }),
    );
  cmd
    .command('install <image>')
    .description('install (or update) a service from an image: an OCI or Docker archive, an https:// URL (with --digest) or docker://HOST/REPO[:TAG]')
    .option('--digest <sha256:hex>', 'digest of the archive (required for a URL)')
    .option('--size <bytes>', 'size of the archive (for a URL)', (v) => Number.parseInt(v, 10))
    .option('--id <id>', 'service id (default: the io.smd.id annotation)')
    .option('--version <n>', 'version (default: the io.smd.version annotation)', (v) => Number.parseInt(v, 10))
    .option('--set <key=value>', 'a setting, e.g. memoryMax=67108864 (repeatable)', collect, [])
    .option('--force', 'install even if the version is not higher', false)
    .option('--signature <file>', 'a sigstore bundle signing the image (a file on the device)')
    .action((image: string, o: { id?: string; version?: number; set: string[]; force: boolean; digest?: string; size?: number; signature?: string }) =>
      withClient((c) =>
        runOperation(c, 'services.install', {
          image: imageArgument(image),
          ...(o.digest ? { digest: o.digest } : {}),
          ...(o.size !== undefined ? { size: o.size } : {}),
          ...(o.id ? { id: o.id } : {}),
          ...(o.version !== undefined ? { version: o.version } : {}),
          ...(o.set.length ? { settings: parseSettings(o.set) } : {}),
          ...(o.force ? { force: true } : {}),
          ...(o.signature ? { signature: resolve(o.signature) } : {}),
        }),
      ),
    );
  for (const action of ['start', 'stop', 'restart'] as const) {
    cmd
      .command(`${action} <id>`)
      .description(`${action} a service (waits for systemd's job)`)
      .action((id: string) =>
        withClient(async (c) => {
          const s = await c.call<Svc>(`services.${action}`, { id });
          out(s, () => `${s.id} ${STATE_NAMES[s.state]}`);
        }),
      );
  }
  cmd
    .command('rm <id>')
    .description('remove a service, its files and unreferenced layers')
    .action((id: string) => withClient((c) => runOperation(c, 'services.remove', { id })));
  cmd
    .command('configure <id> <settings...>')
    .description('change settings: key=value ... (values are JSON when they parse)')
    .option('--expected-row-version <n>', 'refuse if the service changed meanwhile', (v) => Number.parseInt(v, 10))
    .action((id: string, pairs: string[], o: { expectedRowVersion?: number }) =>
      withClient(async (c) => {
        const s = await c.call<Svc>('services.configure', { id, settings: parseSettings(pairs), ...(o.expectedRowVersion ? { expectedRowVersion: o.expectedRowVersion } : {}) });
        out(s, () => keyValues({ id: s.id, settings: s.settings }));
      }),
    );
  cmd
    .command('logs <id>')
    .description("the service's journal")
    .option('-n, --lines <n>', 'how many lines', (v) => Number.parseInt(v, 10), 50)
    .addOption(new Option('-f, --follow', 'keep printing new lines'))
    .action((id: string, o: { lines: number; follow?: boolean }) =>
      withClient(async (c) => {
        type Logs = { entries: { time: number; priority: number; message: string }[]; cursor: string | null };
        const print = (l: Logs) => {
          for (const e of l.entries) process.stdout.write(globals().json ? JSON.stringify(e) + '\n' : `${time(e.time)} ${e.message}\n`);
        };
        let logs = await c.call<Logs>('services.logs', { id, lines: o.lines });
        print(logs);
        if (!o.follow) return;
        let stop = false;
        process.once('SIGINT', () => (stop = true));
        while (!stop) {
          await new Promise((r) => setTimeout(r, 500));
          logs = await c.call<Logs>('services.logs', { id, lines: 1000, ...(logs.cursor ? { cursor: logs.cursor } : {}) });
          print(logs);
        }
        process.exitCode = EXIT.ok;
      }),
    );
}
