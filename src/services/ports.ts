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

/**
 * Fills in the `port` an exposed port left out from the image config's ExposedPorts (`8080/tcp`):
 * the one equal to its hostPort, else the image's only port of that protocol. Anything else is
 * refused (`INVALID_IMAGE`, naming the entry): smd never guesses which port was meant.
 */
export function resolvePorts<S extends Pick<Settings, 'exposedPorts'>>(settings: S, imageExposed: readonly string[] | undefined): S {
  if (!settings.exposedPorts?.some((p) => p.port === undefined)) return settings;
  const exposedPorts = settings.exposedPorts.map((p, i) => {
    if (p.port !== undefined) return p;
    const offered = (imageExposed ?? []).map((k) => /^(\d{1,5})(?:\/(tcp|udp))?$/.exec(k)).filter((m): m is RegExpExecArray => m !== null && (m[2] ?? 'tcp') === p.protocol).map((m) => Number(m[1]));
    const port = offered.includes(p.hostPort!) ? p.hostPort! : offered.length === 1 ? offered[0]! : null;
    if (port === null) {
      throw new SmError('INVALID_IMAGE', `exposedPorts.${i}.port: the image config exposes ${offered.length === 0 ? `no ${p.protocol} port` : `several ${p.protocol} ports (${offered.join(', ')})`} to default to; give port`, { field: `exposedPorts.${i}.port`, imageExposedPorts: imageExposed ?? [] });
    }
    return { ...p, port };
  });
  return { ...settings, exposedPorts };
}
