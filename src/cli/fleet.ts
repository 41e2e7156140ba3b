import { out, program, withClient } from './common.js';
import { duration, keyValues, time } from './format.js';

interface FleetStatus {
  enabled: boolean;
  url?: string;
  deviceId?: string;
  topics?: string;
  connection?: string;
  connectedSince?: number | null;
  lastError?: { message: string; hint?: string; time: number } | null;
  connects?: number;
  attempts?: number;
  nextAttemptInMs?: number | null;
  desired?: { state: string; version: number | null; operationId?: string; code?: string; message?: string; pending: number | null };
  refused?: { version: number | null; code: string; message: string; time: number } | null;
  outbox?: { depth: number; report: number; event: number; reply: number; dropped: number; oldestAt: number | null };
}

export function registerFleetCommands(): void {
  program
    .command('fleet')
    .description('the fleet bridge: connection to the broker, last desired version, outbox depth')
    .action(() =>
      withClient(async (c) => {
        const s = await c.call<FleetStatus>('fleet.status');
        out(s, () => {
          if (!s.enabled) return 'fleet: disabled in the configuration';
          const d = s.desired!;
          const o = s.outbox!;
          const connection =
            s.connection === 'connected'
              ? `connected since ${time(s.connectedSince)}`
              : `${s.connection}${s.lastError ? ` (${s.lastError.message}${s.lastError.hint ? `; ${s.lastError.hint}` : ''})` : ''}${s.nextAttemptInMs != null ? `, next attempt in ${duration(s.nextAttemptInMs)}` : ''}`;
          return keyValues({
            broker: s.url,
            device: s.deviceId,
            topics: s.topics,
            connection,
            connects: s.connects,
            desired: d.version === null ? 'none yet' : `version ${d.version}: ${d.state}${d.code ? ` (${d.code}: ${d.message})` : ''}${d.operationId ? ` [${d.operationId}]` : ''}`,
            pending: d.pending ?? undefined,
            refused: s.refused ? `version ${s.refused.version ?? '?'}: ${s.refused.code}: ${s.refused.message}` : undefined,
            outbox: `${o.depth} (${o.report} report, ${o.event} events, ${o.reply} replies${o.dropped ? `; ${o.dropped} dropped` : ''})${o.oldestAt ? `, oldest ${time(o.oldestAt)}` : ''}`,
          });
        });
      }),
    );
}
