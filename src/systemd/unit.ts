/**
 * Rendering of a service description into a systemd unit file. Pure: no I/O.
 *
 * Every value that comes from outside (image argv and env, descriptions, paths) is either escaped
 * with systemd's own quoting rules or rejected, so that no value can start a new line and
 * inject a directive, and no `%` specifier or `$VAR` expansion changes what the service sees.
 */
import { SmError } from '../errors.js';

export type RestartPolicy = 'no' | 'on-success' | 'on-failure' | 'on-abnormal' | 'on-watchdog' | 'on-abort' | 'always';
export type ServiceType = 'simple' | 'exec' | 'notify' | 'oneshot' | 'forking';

export interface BindMount {
  source: string;
  target: string;
  readOnly?: boolean;
}

export interface DeviceRule {
  path: string;
  /** Any combination of r, w, m (default rw). */
  access?: string;
}

export interface UnitSpec {
  description: string;
  /** argv; argv[0] is the program (absolute, or looked up in PATH inside the root). */
  command: readonly string[];
  env?: Readonly<Record<string, string>>;
  workingDirectory?: string;
  user?: string | number;
  group?: string | number;
  rootDirectory?: string;
  networkNamespacePath?: string;
  bindMounts?: readonly BindMount[];
  /**
   * Paths that stay writable under ProtectSystem=strict (e.g. the service's data directory).
   * HOST paths: systemd 252 resolves ReadWritePaths= against the host root, not RootDirectory=
   * (checked: `/data` under RootDirectory=R stays read-only, `R/data` becomes writable).
   */
  readWritePaths?: readonly string[];
  limits?: {
    /** bytes */
    memoryMax?: number;
    /** percent of one CPU, e.g. 50 for half a CPU, 200 for two */
    cpuQuota?: number;
    tasksMax?: number;
  };
  /** Device nodes the service may use. None: PrivateDevices=yes. */
  devices?: readonly (string | DeviceRule)[];
  restart?: {
    policy: RestartPolicy;
    restartSec?: number;
    burst?: number;
    intervalSec?: number;
  };
  startTimeoutSec?: number;
  stopTimeoutSec?: number;
  /** Default `exec`: the start job fails when the program cannot be executed. */
  type?: ServiceType;
  /** Only for programs known not to need W+X memory (no JIT). Default false. */
  memoryDenyWriteExecute?: boolean;
  /** Extra `Key=Value` lines for [Service], already validated by the caller; still checked for newlines. */
  extraServiceLines?: readonly string[];
}

/**
 * The sandboxing smd always sets. Each option was checked to start a unit under the sandbox's
 * `systemd --user` manager (running as root, systemd 252) with RootDirectory= and User=;
 * see test/systemd/hardening.test.ts.
 */
export const HARDENING: readonly string[] = [
  'NoNewPrivileges=yes',
  'ProtectSystem=strict',
  'ProtectHome=yes',
  'PrivateTmp=yes',
  'PrivateIPC=yes',
  'ProtectKernelTunables=yes',
  'ProtectKernelModules=yes',
  'ProtectKernelLogs=yes',
  'ProtectControlGroups=yes',
  'ProtectClock=yes',
  'ProtectHostname=yes',
  'ProtectProc=invisible',
  'RestrictSUIDSGID=yes',
  'RestrictNamespaces=yes',
  'RestrictRealtime=yes',
  'LockPersonality=yes',
  'SystemCallArchitectures=native',
  'SystemCallFilter=@system-service',
  'SystemCallErrorNumber=EPERM',
  'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK',
  'CapabilityBoundingSet=',
  'AmbientCapabilities=',
  'KeyringMode=private',
  'UMask=0077',
];

/** Every unit's stream identifier: its own name without the type suffix (systemd's `%N`). */
export const SYSLOG_IDENTIFIER = 'SyslogIdentifier=%N';

const unitError = (message: string, details?: Record<string, unknown>) => new SmError('INTERNAL', `unit: ${message}`, details);

/** Characters escaped with a short C escape inside a quoted systemd word. */
const SHORT_ESCAPES: Record<string, string> = { '\n': '\\n', '\t': '\\t', '\r': '\\r', '\v': '\\v', '\f': '\\f', '\b': '\\b', '\x07': '\\a' };

/**
 * Quote one word for systemd's extract_first_word(EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE): wrapped in
 * double quotes, backslash and quote escaped, control characters as C escapes (so a value can
 * never contain a real line break), `%` doubled for specifier expansion.
 */
export function quoteWord(value: string, opts: { dollar: boolean }): string {
  if (value.includes('\0')) throw unitError('value contains a NUL byte', { value: value.slice(0, 80) });
  let out = '"';
  for (const ch of value) {
    const code = ch.codePointAt(0)!;
    if (ch === '\\') out += '\\\\';
    else if (ch === '"') out += '\\"';
    else if (ch === '%') out += '%%';
    else if (ch === '$' && opts.dollar) out += '$$';
    else if (SHORT_ESCAPES[ch]) out += SHORT_ESCAPES[ch];
    else if (code < 0x20 || code === 0x7f) out += '\\x' + code.toString(16).padStart(2, '0');
    else if (code === 0x2028 || code === 0x2029 || code === 0x85) out += ch; // not line breaks for systemd
    else out += ch;
  }
  return out + '"';
}

/** ExecStart= value for an argv: every word quoted; `$` doubled so no variable is expanded. */
export function renderExecStart(argv: readonly string[]): string {
  if (argv.length === 0 || argv[0] === '') throw unitError('command is empty');
  return argv
    .map((arg) => {
      // A lone ";" separates commands even when quoted; systemd's escape for a literal one is "\;".
      if (arg === ';') return '\\;';
      return quoteWord(arg, { dollar: true });
    })
    .join(' ');
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** One Environment= value (the whole assignment quoted as one word). */
export function renderEnvironment(name: string, value: string): string {
  if (!ENV_NAME.test(name)) throw unitError(`invalid environment variable name ${JSON.stringify(name)}`);
  return quoteWord(`${name}=${value}`, { dollar: false });
}

/** Free text (Description=): control characters become spaces, `%` is doubled. */
export function renderText(value: string): string {
  // eslint-disable-next-line no-control-regex
  const flat = value.replace(/[\x00-\x1f\x7f]+/g, ' ').trim();
  return flat.replace(/%/g, '%%').replace(/\\+$/, '') || 'smd service';
}

const SAFE_PATH = /^\/[A-Za-z0-9._@+\-/=,~]*$/;

/** Absolute paths only, and only from a conservative character set (no whitespace, quotes, colons, backslashes, `%`). */
export function checkPath(path: string, field: string): string {
  if (!SAFE_PATH.test(path) || path.split('/').includes('..')) throw unitError(`${field}: unsafe or relative path ${JSON.stringify(path)}`, { field });
  return path;
}

const USER_NAME = /^[a-z_][a-z0-9_-]{0,31}$/;
function renderUser(v: string | number, field: string): string {
  if (typeof v === 'number') {
    if (!Number.isInteger(v) || v < 0 || v >= 0xffffffff) throw unitError(`${field}: invalid id ${v}`);
    return String(v);
  }
  if (!USER_NAME.test(v) && !/^\d+$/.test(v)) throw unitError(`${field}: invalid name ${JSON.stringify(v)}`);
  return v;
}

function positiveInt(v: number, field: string, min = 0): string {
  if (!Number.isInteger(v) || v < min) throw unitError(`${field}: must be an integer >= ${min}`, { value: v });
  return String(v);
}

function seconds(v: number, field: string): string {
  if (!Number.isFinite(v) || v < 0) throw unitError(`${field}: must be a non-negative number of seconds`, { value: v });
  // systemd accepts fractional seconds with an explicit unit
  return Number.isInteger(v) ? String(v) : `${Math.round(v * 1000)}ms`;
}

function checkLine(line: string): string {
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(line)) throw unitError('directive contains a control character', { line: line.slice(0, 80) });
  return line;
}

/** The text of `smd-<id>.service` for a service description. */
export function renderUnit(spec: UnitSpec): string {
  const unit: string[] = ['[Unit]', `Description=${renderText(spec.description)}`];
  const service: string[] = ['[Service]', `Type=${spec.type ?? 'exec'}`, `ExecStart=${renderExecStart(spec.command)}`];
  // The identifier of the unit's stdout/stderr stream is its name without `.service`
  // (`smd-<id>`): systemd expands `%N` from the unit file's name (unitNameFor validated it), so no
  // outside value is written here. Journal reads match on it because journald does not always
  // file the stream under `_SYSTEMD_UNIT=` (see src/journal/match.ts).
  service.push(SYSLOG_IDENTIFIER);

  if (spec.type === 'notify') service.push('NotifyAccess=main');
  for (const [k, v] of Object.entries(spec.env ?? {})) service.push(`Environment=${renderEnvironment(k, v)}`);
  if (spec.workingDirectory !== undefined) service.push(`WorkingDirectory=${checkPath(spec.workingDirectory, 'workingDirectory')}`);
  if (spec.user !== undefined) service.push(`User=${renderUser(spec.user, 'user')}`);
  if (spec.group !== undefined) service.push(`Group=${renderUser(spec.group, 'group')}`);
  if (spec.rootDirectory !== undefined) service.push(`RootDirectory=${checkPath(spec.rootDirectory, 'rootDirectory')}`);
  if (spec.networkNamespacePath !== undefined) service.push(`NetworkNamespacePath=${checkPath(spec.networkNamespacePath, 'networkNamespacePath')}`);
  for (const b of spec.bindMounts ?? []) {
    const key = b.readOnly ? 'BindReadOnlyPaths' : 'BindPaths';
    service.push(`${key}=${checkPath(b.source, 'bindMounts.source')}:${checkPath(b.target, 'bindMounts.target')}`);
  }
  for (const p of spec.readWritePaths ?? []) service.push(`ReadWritePaths=${checkPath(p, 'readWritePaths')}`);

  const limits = spec.limits ?? {};
  if (limits.memoryMax !== undefined) service.push(`MemoryMax=${positiveInt(limits.memoryMax, 'limits.memoryMax', 1)}`);
  if (limits.cpuQuota !== undefined) service.push(`CPUQuota=${positiveInt(limits.cpuQuota, 'limits.cpuQuota', 1)}%`);
  if (limits.tasksMax !== undefined) service.push(`TasksMax=${positiveInt(limits.tasksMax, 'limits.tasksMax', 1)}`);

  service.push(...HARDENING);
  if (spec.memoryDenyWriteExecute) service.push('MemoryDenyWriteExecute=yes');
  const devices = spec.devices ?? [];
  if (devices.length === 0) {
    service.push('PrivateDevices=yes');
  } else {
    service.push('PrivateDevices=no', 'DevicePolicy=closed');
    for (const d of devices) {
      const rule = typeof d === 'string' ? { path: d } : d;
      const access = rule.access ?? 'rw';
      if (!/^[rwm]{1,3}$/.test(access)) throw unitError(`devices: invalid access ${JSON.stringify(access)}`);
      if (!rule.path.startsWith('/dev/')) throw unitError(`devices: ${JSON.stringify(rule.path)} is not under /dev`);
      service.push(`DeviceAllow=${checkPath(rule.path, 'devices')} ${access}`);
    }
  }

  if (spec.restart) {
    const r = spec.restart;
    const policies: RestartPolicy[] = ['no', 'on-success', 'on-failure', 'on-abnormal', 'on-watchdog', 'on-abort', 'always'];
    if (!policies.includes(r.policy)) throw unitError(`restart.policy: invalid ${JSON.stringify(r.policy)}`);
    service.push(`Restart=${r.policy}`);
    if (r.restartSec !== undefined) service.push(`RestartSec=${seconds(r.restartSec, 'restart.restartSec')}`);
    if (r.burst !== undefined) unit.push(`StartLimitBurst=${positiveInt(r.burst, 'restart.burst')}`);
    if (r.intervalSec !== undefined) unit.push(`StartLimitIntervalSec=${seconds(r.intervalSec, 'restart.intervalSec')}`);
  }
  if (spec.startTimeoutSec !== undefined) service.push(`TimeoutStartSec=${seconds(spec.startTimeoutSec, 'startTimeoutSec')}`);
  if (spec.stopTimeoutSec !== undefined) service.push(`TimeoutStopSec=${seconds(spec.stopTimeoutSec, 'stopTimeoutSec')}`);
  for (const line of spec.extraServiceLines ?? []) {
    if (!/^[A-Z][A-Za-z]+=/.test(line)) throw unitError(`extraServiceLines: not a directive ${JSON.stringify(line.slice(0, 80))}`);
    if (line.startsWith('SyslogIdentifier=')) throw unitError('extraServiceLines: SyslogIdentifier= is fixed (journal reads rely on it)');
    service.push(line);
  }

  const lines = [...unit, '', ...service, ''];
  return lines.map(checkLine).join('\n');
}

/** The unit file name smd uses for a service id. */
export function unitNameFor(id: string, prefix = 'smd-'): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(id) || id.length > 200) throw unitError(`invalid service id ${JSON.stringify(id)}`);
  return `${prefix}${id}.service`;
}
