import * as z from 'zod';
import { maybeWait, waitParam } from '../operations/methods.js';
import type { Operations } from '../operations/operations.js';
import { archiveDigest, imageSource, signatureParam } from '../layers/methods.js';
import { defineMethod, noParams, type MethodSpec } from '../rpc/registry.js';
import type { ServiceManager } from './manager.js';
import { settingsSchema } from './settings.js';

const id = z.string().min(1).max(63);
const byId = z.strictObject({ id });

export function serviceMethods(services: ServiceManager, ops: Operations): MethodSpec<any, any>[] {
  return [
    defineMethod({
      name: 'services.install',
      summary: 'Install a service from an OCI image archive, or update it when the id is installed with a lower version',
      params: z.strictObject({
        image: imageSource,
        digest: archiveDigest.optional(),
        size: z.number().int().nonnegative().optional(),
        signature: signatureParam.optional(),
        id: id.optional(),
        version: z.number().int().nonnegative().optional(),
        settings: settingsSchema.optional(),
        force: z.boolean().optional(),
        wait: waitParam,
      }),
      mutating: true,
      handler: (p) => maybeWait(ops, services.install(p), p.wait),
    }),
    defineMethod({
      name: 'services.list',
      summary: 'Installed services',
      params: noParams,
      mutating: false,
      handler: () => services.list(),
    }),
    defineMethod({
      name: 'services.get',
      summary: "One service with systemd's live view of its unit",
      params: byId,
      mutating: false,
      handler: async (p) => ({ ...services.get(p.id), live: await services.live(p.id) }),
    }),
    defineMethod({
      name: 'services.start',
      summary: "Start a service; resolves when systemd's job finished (a failed start is an error)",
      params: byId,
      mutating: true,
      handler: (p) => services.start(p.id),
    }),
    defineMethod({
      name: 'services.stop',
      summary: "Stop a service; resolves when systemd's job finished",
      params: byId,
      mutating: true,
      handler: (p) => services.stop(p.id),
    }),
    defineMethod({
      name: 'services.restart',
      summary: "Restart a service; resolves when systemd's job finished",
      params: byId,
      mutating: true,
      handler: (p) => services.restart(p.id),
    }),
    defineMethod({
      name: 'services.remove',
      summary: 'Stop and remove a service with its unit, files, storage and unreferenced layers',
      params: z.strictObject({ id, wait: waitParam }),
      mutating: true,
      handler: (p) => maybeWait(ops, services.remove(p.id), p.wait),
    }),
    defineMethod({
      name: 'services.configure',
      summary: 'Change settings (refused with CONFLICT when expectedRowVersion is stale); applied to the unit at once',
      params: z.strictObject({ id, settings: settingsSchema, expectedRowVersion: z.number().int().positive().optional() }),
      mutating: true,
      handler: (p) => services.configure(p.id, p.settings, p.expectedRowVersion),
    }),
    defineMethod({
      name: 'services.logs',
      summary: "The unit's journal entries, oldest first; pass the returned cursor to continue",
      params: z.strictObject({ id, lines: z.number().int().min(1).max(10_000).optional(), since: z.number().int().nonnegative().optional(), cursor: z.string().min(1).max(1000).optional() }),
      mutating: false,
      handler: (p) => services.logs(p.id, { ...(p.lines ? { lines: p.lines } : {}), ...(p.since !== undefined ? { since: p.since } : {}), ...(p.cursor ? { cursor: p.cursor } : {}) }),
    }),
  ];
}
