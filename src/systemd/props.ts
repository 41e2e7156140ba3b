/**
 * Pure helpers of the systemd adapter: unit names and object paths, D-Bus property values, and
 * how property changes fold into a unit's record. No I/O; unit-tested in test/systemd/unit.test.ts
 * and test/systemd/props.test.ts.
 */
import { SmError } from '../errors.js';
import { variantValue } from './dbus.js';
import type { UnitState } from './types.js';

export const SD_NAME = 'org.freedesktop.systemd1';
export const SD_PATH = '/org/freedesktop/systemd1';
export const SD_MANAGER = 'org.freedesktop.systemd1.Manager';
export const SD_UNIT = 'org.freedesktop.systemd1.Unit';
export const SD_SERVICE = 'org.freedesktop.systemd1.Service';
export const PROPS = 'org.freedesktop.DBus.Properties';
export const UNIT_PATH_PREFIX = '/org/freedesktop/systemd1/unit/';
const UINT64_MAX = 0xffffffffffffffffn;

/** What smd keeps per unit; `since` comes from StateChangeTimestamp (when ActiveState last changed). */
export type UnitRecord = UnitState;

export function checkUnitName(name: string): void {
  if (!/^[A-Za-z0-9:_.@\\-]+\.[a-z]+$/.test(name) || name.length > 255) throw new SmError('INTERNAL', `invalid unit name ${JSON.stringify(name)}`, { unit: name });
}

/** systemd's bus_label_escape: every byte but [A-Za-z0-9] as _xx. */
export function unitObjectPath(name: string): string {
  let out = '';
  for (const b of Buffer.from(name, 'utf8')) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9]/.test(c) ? c : '_' + b.toString(16).padStart(2, '0');
  }
  return UNIT_PATH_PREFIX + (out || '_');
}

export function unitNameFromPath(path: string): string | null {
  if (!path.startsWith(UNIT_PATH_PREFIX)) return null;
  const label = path.slice(UNIT_PATH_PREFIX.length);
  if (label === '_') return '';
  const bytes: number[] = [];
  for (let i = 0; i < label.length; i++) {
    if (label[i] === '_') {
      const hex = label.slice(i + 1, i + 3);
      if (!/^[0-9a-f]{2}$/.test(hex)) return null;
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else bytes.push(label.charCodeAt(i));
  }
  return Buffer.from(bytes).toString('utf8');
}

/** `t`/`u` values from dbus-next (BigInt or number) to a number; UINT64_MAX ("not set") to null. */
export function u64(v: unknown): number | null {
  const x = variantValue(v);
  if (typeof x === 'bigint') return x === UINT64_MAX ? null : Number(x);
  if (typeof x === 'number') return Number.isFinite(x) ? x : null;
  return null;
}

export function num(v: unknown): number | null {
  return u64(v);
}

export function str(v: unknown): string | null {
  const x = variantValue(v);
  return typeof x === 'string' ? x : null;
}

/** Realtime µs timestamp to ms; 0 means never. */
export function usecToMs(v: unknown): number | null {
  const n = u64(v);
  return n === null || n === 0 ? null : Math.floor(n / 1000);
}

export function newRecord(name: string): UnitRecord {
  return { unit: name, loadState: null, activeState: 'inactive', subState: 'dead', result: null, execMainStatus: null, execMainCode: null, mainPid: null, restarts: null, since: null };
}

/** Folds changed org.freedesktop.systemd1.Unit properties into the record. */
export function applyUnit(rec: UnitRecord, p: Record<string, unknown>): void {
  if ('ActiveState' in p) rec.activeState = str(p.ActiveState) ?? rec.activeState;
  if ('SubState' in p) rec.subState = str(p.SubState) ?? rec.subState;
  if ('LoadState' in p) rec.loadState = str(p.LoadState);
  if ('StateChangeTimestamp' in p) rec.since = usecToMs(p.StateChangeTimestamp) ?? rec.since;
}

/** Folds changed org.freedesktop.systemd1.Service properties into the record. */
export function applyService(rec: UnitRecord, p: Record<string, unknown>): void {
  if ('MainPID' in p) rec.mainPid = num(p.MainPID) || null;
  if ('Result' in p) rec.result = str(p.Result);
  if ('ExecMainStatus' in p) rec.execMainStatus = num(p.ExecMainStatus);
  if ('ExecMainCode' in p) rec.execMainCode = num(p.ExecMainCode);
  if ('NRestarts' in p) rec.restarts = num(p.NRestarts);
}

/** A copy of the record as the rest of smd sees it. */
export function publicState(r: UnitRecord): UnitState {
  return {
    unit: r.unit,
    loadState: r.loadState,
    activeState: r.activeState,
    subState: r.subState,
    result: r.result,
    execMainStatus: r.execMainStatus,
    execMainCode: r.execMainCode,
    mainPid: r.mainPid,
    restarts: r.restarts,
    since: r.since,
  };
}
