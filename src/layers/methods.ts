import * as z from 'zod';
import { maybeWait, waitParam } from '../operations/methods.js';
import type { Operations } from '../operations/operations.js';
import { defineMethod, noParams, type MethodSpec } from '../rpc/registry.js';
import { layerInUse, type LayerStore } from './store.js';

const digest = z.string().regex(/^sha256:[a-f0-9]{64}$/, 'expected sha256:<64 hex digits>');
const archivePath = z.string().min(1).startsWith('/', 'expected an absolute path');

/** Layer actions that change the store all run as operations under one lock key. */
const LOCK = 'layers';

export function layerMethods(store: LayerStore, ops: Operations): MethodSpec<any, any>[] {
  return [
    defineMethod({
      name: 'layers.install',
      summary: 'Install the layers of a layer package (an OCI image archive); progress by bytes read',
      params: z.strictObject({ image: archivePath, wait: waitParam }),
      mutating: true,
      handler: (p) =>
        maybeWait(
          ops,
          ops.start({
            kind: 'layers.install',
            target: p.image,
            inputs: { image: p.image },
            lockKey: LOCK,
            work: async (op) => {
              op.step('unpack', p.image);
              return store.installPackage(p.image, (f) => op.progress(f * 99));
            },
          }),
          p.wait,
        ),
    }),
    defineMethod({
      name: 'layers.list',
      summary: 'Installed layers with the services that use them',
      params: noParams,
      mutating: false,
      handler: () => store.list(),
    }),
    defineMethod({
      name: 'layers.get',
      summary: 'One layer with the services that use it',
      params: z.strictObject({ digest }),
      mutating: false,
      handler: (p) => store.get(p.digest),
    }),
    defineMethod({
      name: 'layers.remove',
      summary: 'Remove a layer; one in use is refused with CONFLICT unless force',
      params: z.strictObject({ digest, force: z.boolean().default(false), wait: waitParam }),
      mutating: true,
      handler: (p) => {
        // NOT_FOUND and CONFLICT now rather than as a failed operation (the operation checks again).
        const layer = store.get(p.digest);
        if (layer.usedBy.length > 0 && !p.force) throw layerInUse(p.digest, layer.usedBy);
        return maybeWait(
          ops,
          ops.start({
            kind: 'layers.remove',
            target: p.digest,
            inputs: { digest: p.digest, force: p.force },
            lockKey: LOCK,
            work: async (op) => {
              op.step('remove');
              return store.remove(p.digest, p.force);
            },
          }),
          p.wait,
        );
      },
    }),
    defineMethod({
      name: 'layers.prune',
      summary: 'Remove every layer that no service uses',
      params: z.strictObject({ wait: waitParam }),
      mutating: true,
      handler: (p) =>
        maybeWait(
          ops,
          ops.start({
            kind: 'layers.prune',
            lockKey: LOCK,
            work: async (op) => {
              op.step('prune');
              return store.prune();
            },
          }),
          p.wait,
        ),
    }),
  ];
}
