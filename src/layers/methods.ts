import * as z from 'zod';
import { maybeWait, waitParam } from '../operations/methods.js';
import type { Operations } from '../operations/operations.js';
import type { ImageSources } from '../images/sources.js';
import { defineMethod, noParams, type MethodSpec } from '../rpc/registry.js';
import { layerInUse, type LayerStore } from './store.js';

const digest = z.string().regex(/^sha256:[a-f0-9]{64}$/, 'expected sha256:<64 hex digits>');
/** An image source (SPEC 11): an absolute path, an https URL (with its digest) or docker://. */
export const imageSource = z.string().min(1).refine((s) => s.startsWith('/') || s.startsWith('https://') || s.startsWith('http://') || s.startsWith('docker://'), 'expected an absolute path, an https:// URL or docker://HOST/REPO[:TAG|@DIGEST]');
export const archiveDigest = z.string().regex(/^sha256:[a-f0-9]{64}$/, 'expected sha256:<64 hex digits>');
/** A sigstore bundle given beside the image (SPEC 13): its JSON object, or the absolute path of a file holding it. */
export const signatureParam = z.union([z.record(z.string(), z.unknown()), z.string().startsWith('/', 'expected a bundle object or an absolute path')]);

/** Layer actions that change the store all run as operations under one lock key. */
const LOCK = 'layers';

export function layerMethods(store: LayerStore, sources: ImageSources, ops: Operations): MethodSpec<any, any>[] {
  return [
    defineMethod({
      name: 'layers.install',
      summary: 'Install the layers of a layer package (an image from any source); progress by bytes',
      params: z.strictObject({ image: imageSource, digest: archiveDigest.optional(), size: z.number().int().nonnegative().optional(), signature: signatureParam.optional(), wait: waitParam }),
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
              const ref = { image: p.image, digest: p.digest, size: p.size, signature: p.signature };
              op.step('resolve', p.image);
              const resolved = await sources.resolve(ref);
              if (resolved.signedBy !== null) op.record({ signedBy: resolved.signedBy });
              await sources.ensureSpace([resolved]);
              op.step('fetch', p.image);
              const image = await sources.fetch(resolved, { onProgress: (bytesDone, bytesTotal) => op.progress(bytesTotal > 0 ? (bytesDone / bytesTotal) * 50 : 50, { bytesDone, bytesTotal }) });
              op.step('unpack', p.image);
              try {
                return await store.installPackage(image, (f) => op.progress(50 + f * 49));
              } finally {
                await sources.release(image);
              }
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
