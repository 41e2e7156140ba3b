import { readdir, rm } from 'node:fs/promises';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { desc, eq, inArray } from 'drizzle-orm';
import type { Db } from '../db/database.js';
import { config, desiredState, layers, operations, services } from '../db/schema.js';
import { SmError, notFound } from '../errors.js';
import type { ImageInfo, ImageLimits } from '../images/index.js';
import { KeyedLock } from '../lock.js';
import type { Logger } from '../log.js';

/** The Layer object clients see (SPEC section 7). */
export interface Layer {
  digest: string;
  layerId: string | null;
  osVersion: string | null;
  path: string;
  size: number;
  mediaType: string | null;
  usedBy: string[];
  createdAt: number;
}

type Row = typeof layers.$inferSelect;

const HEX = /^[a-f0-9]{64}$/;

/**
 * The content-addressed layer store: one directory per digest under `<dataDir>/layers/sha256`,
 * recorded in the `layers` table. A directory exists only once its blob verified and unpacked
 * completely (staging + rename); the row follows it, and start-up removes directories without
 * a row. Every change runs under one lock, so a prune never races an install.
 */
export class LayerStore {
  readonly root: string;
  private readonly lock = new KeyedLock();

  constructor(
    private readonly db: Db,
    dataDir: string,
    private readonly limits: ImageLimits,
    private readonly logger: Logger,
  ) {
    this.root = join(dataDir, 'layers', 'sha256');
  }

  dirFor(digest: string): string {
    const hex = digest.slice('sha256:'.length);
    if (!digest.startsWith('sha256:') || !HEX.test(hex)) throw new SmError('INVALID_IMAGE', `not a sha256 digest: ${digest}`, { digest });
    return join(this.root, hex);
  }

  /** Runs `fn` with the store to itself (installs, removals and prunes one at a time). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.lock.run('store', fn);
  }

  /** Start-up: drop staging leftovers and directories without a row; forget rows without a directory. */
  async reconcile(): Promise<{ removedDirs: string[]; forgottenRows: string[] }> {
    mkdirSync(this.root, { recursive: true });
    const known = new Set(this.db.select({ digest: layers.digest }).from(layers).all().map((r) => r.digest.slice('sha256:'.length)));
    const entries = await readdir(this.root);
    const removedDirs: string[] = [];
    for (const name of entries) {
      if (known.has(name)) continue;
      await rm(join(this.root, name), { recursive: true, force: true });
      removedDirs.push(name);
    }
    const onDisk = new Set(entries);
    const forgottenRows = [...known].filter((hex) => !onDisk.has(hex)).map((hex) => `sha256:${hex}`);
    if (forgottenRows.length > 0) {
      this.db.delete(layers).where(inArray(layers.digest, forgottenRows)).run();
      this.logger.error('layers recorded but missing on disk were forgotten', { digests: forgottenRows });
    }
    if (removedDirs.length > 0) this.logger.warn('removed layer directories without a database row', { names: removedDirs });
    return { removedDirs, forgottenRows };
  }

  /**
   * Makes every layer of `image` present (unpacking only the missing ones, verified while
   * streaming) and recorded. Call inside `exclusive` together with whatever references them.
   */
  async ensureLayers(image: ImageInfo, meta: { layerId?: string | null; osVersion?: string | null }, onProgress?: (fraction: number) => void): Promise<{ extracted: string[]; reused: string[] }> {
    const wanted = new Set(image.layers.map((l) => l.digest));
    const { extractLayers } = await loadImages();
    const result = await extractLayers(image, {
      wanted,
      destFor: (d) => this.dirFor(d),
      limits: this.limits,
      ...(onProgress ? { onProgress: (done: number, total: number) => onProgress(total > 0 ? done / total : 1) } : {}),
    });
    const now = Date.now();
    const sizes = new Map(result.extracted.map((e) => [e.digest, e.unpackedBytes]));
    this.db.transaction((tx) => {
      for (const l of image.layers) {
        tx.insert(layers)
          .values({ digest: l.digest, layerId: meta.layerId ?? null, osVersion: meta.osVersion ?? null, path: this.dirFor(l.digest), size: sizes.get(l.digest) ?? 0, mediaType: l.mediaType, createdAt: now, updatedAt: now })
          .onConflictDoNothing()
          .run();
      }
    });
    return { extracted: result.extracted.map((e) => e.digest), reused: result.present };
  }

  /** Whether a layer is stored (recorded; its directory exists once recorded). */
  has(digest: string): boolean {
    return this.db.select({ digest: layers.digest }).from(layers).where(eq(layers.digest, digest)).get() !== undefined;
  }

  /** `layers.install`: a layer package (fetched by ImageSources), checked against the system version. */
  async installPackage(image: ImageInfo, onProgress?: (fraction: number) => void): Promise<{ digests: string[]; extracted: string[]; reused: string[] }> {
    this.checkCompatible(image);
    const done = await this.exclusive(() => this.ensureLayers(image, { layerId: image.layerId, osVersion: image.osVersion }, onProgress));
    return { digests: image.layers.map((l) => l.digest), ...done };
  }

  /** INCOMPATIBLE when a layer package is for another OS version than config.version. */
  checkCompatible(image: Pick<ImageInfo, 'osVersion'>): void {
    const systemVersion = this.db.select({ version: config.version }).from(config).get()?.version ?? null;
    if (image.osVersion !== null && image.osVersion !== String(systemVersion)) {
      throw new SmError('INCOMPATIBLE', `layer package is for OS version ${image.osVersion}, this system is ${systemVersion ?? 'unset (see system.setVersion)'}`, {
        osVersion: image.osVersion,
        systemVersion,
      });
    }
  }

  list(): Layer[] {
    const users = this.usage();
    return this.db
      .select()
      .from(layers)
      .orderBy(layers.createdAt, layers.digest)
      .all()
      .map((r) => this.toLayer(r, users));
  }

  get(digest: string): Layer {
    const row = this.db.select().from(layers).where(eq(layers.digest, digest)).get();
    if (!row) throw notFound(`layer ${digest}`, { digest });
    return this.toLayer(row, this.usage());
  }

  /** Removes one layer; one in use is a CONFLICT unless forced. */
  remove(digest: string, force: boolean): Promise<{ removed: string[] }> {
    return this.exclusive(async () => {
      const layer = this.get(digest);
      if (layer.usedBy.length > 0 && !force) throw layerInUse(digest, layer.usedBy);
      await this.drop([digest]);
      return { removed: [digest] };
    });
  }

  /** Removes every layer no service references. */
  prune(): Promise<{ removed: string[]; freedBytes: number }> {
    return this.exclusive(async () => {
      const users = this.usage();
      const unused = this.db
        .select()
        .from(layers)
        .all()
        .filter((r) => !users.has(r.digest));
      await this.drop(unused.map((r) => r.digest));
      return { removed: unused.map((r) => r.digest), freedBytes: unused.reduce((n, r) => n + r.size, 0) };
    });
  }

  /** Row first, then the directory: a crash in between leaves a directory that start-up removes. */
  private async drop(digests: string[]): Promise<void> {
    if (digests.length === 0) return;
    this.db.delete(layers).where(inArray(layers.digest, digests)).run();
    for (const d of digests) await rm(this.dirFor(d), { recursive: true, force: true });
    this.logger.info('layers removed', { digests });
  }

  /**
   * digest → ids of the services whose layerList names it, and of the services whose update is
   * in flight and not yet committed: a crash may still roll those back to their previous layers,
   * so a prune by another operation meanwhile must keep them.
   */
  private usage(): Map<string, string[]> {
    const users = new Map<string, string[]>();
    const use = (d: string, id: string) => {
      const list = users.get(d) ?? [];
      if (!list.includes(id)) list.push(id);
      users.set(d, list);
    };
    for (const s of this.db.select({ id: services.id, layerList: services.layerList }).from(services).all()) {
      for (const d of parseLayerList(s.layerList)) use(d, s.id);
    }
    const running = this.db.select({ inputs: operations.inputs }).from(operations).where(inArray(operations.state, ['pending', 'running'])).all();
    type Previous = { id: string; layerList: string | null };
    for (const { inputs } of running) {
      const v = JSON.parse(inputs) as { mode?: string; committed?: boolean; previous?: Previous; group?: { committed?: boolean; changes?: Record<string, { mode?: string; previous?: Previous }> } };
      if (v.mode === 'update' && !v.committed && v.previous) for (const d of parseLayerList(v.previous.layerList)) use(d, v.previous.id);
      // A group of changes (the desired state's apply) keeps every previous version until it committed.
      if (v.group && !v.group.committed) {
        for (const c of Object.values(v.group.changes ?? {})) if (c.mode === 'update' && c.previous) for (const d of parseLayerList(c.previous.layerList)) use(d, c.previous.id);
      }
    }
    // The layers of the desired state: of the last apply that succeeded, and of one running now.
    const applies = this.db.select({ state: desiredState.state, layerDigests: desiredState.layerDigests }).from(desiredState).where(inArray(desiredState.state, ['running', 'succeeded'])).orderBy(desc(desiredState.createdAt)).all();
    const lastSucceeded = applies.find((a) => a.state === 'succeeded');
    for (const a of applies) if (a.state === 'running' || a === lastSucceeded) for (const d of parseLayerList(a.layerDigests)) use(d, DESIRED_STATE_USER);
    return users;
  }

  private toLayer(r: Row, users: Map<string, string[]>): Layer {
    return { digest: r.digest, layerId: r.layerId, osVersion: r.osVersion, path: r.path ?? this.dirFor(r.digest), size: r.size, mediaType: r.mediaType, usedBy: users.get(r.digest) ?? [], createdAt: r.createdAt };
  }
}

/**
 * The image code (and tar) is loaded on first use: a device that installs nothing at boot starts
 * about 40 ms sooner.
 */
export const loadImages = () => import('../images/index.js');

/** How `usedBy` names the desired state (SPEC 12) when its `layers` keep a layer. */
export const DESIRED_STATE_USER = '(desired state)';

export const layerInUse = (digest: string, usedBy: string[]) =>
  new SmError('CONFLICT', `layer ${digest} is used by ${usedBy.join(', ')}; pass force to remove it anyway`, { usedBy });

export function parseLayerList(json: string | null): string[] {
  if (!json) return [];
  try {
    const v = JSON.parse(json) as unknown;
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
  } catch {
    return [];
  }
}
