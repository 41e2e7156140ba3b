import { SmError } from '../errors.js';
import { hostPortOf } from '../traffic/policy.js';
import { columnsToSettings, type Settings } from './settings.js';
import type { Row } from './types.js';

/**
 * A host port and protocol belong to one service only (SPEC 5): `CONFLICT` naming the holder when
 * `settings` asks for one another installed service exposes. Synchronous, so that the caller's
 * check and write of the row happen in one turn of the event loop (no other install in between).
 */
export function checkPortConflicts(rows: readonly Row[], id: string, settings: Pick<Settings, 'exposedPorts'>): void {
  const wanted = new Map((settings.exposedPorts ?? []).map((p) => [`${hostPortOf(p)}/${p.protocol}`, p]));
  if (wanted.size === 0) return;
  for (const row of rows) {
    if (row.id === id || row.networkPolicy === null) continue;
    for (const p of columnsToSettings(row).exposedPorts ?? []) {
      const key = `${hostPortOf(p)}/${p.protocol}`;
      if (wanted.has(key)) throw new SmError('CONFLICT', `host port ${key} is already exposed by ${row.id}`, { hostPort: hostPortOf(p), protocol: p.protocol, serviceId: row.id, field: 'exposedPorts' });
    }
  }
}
