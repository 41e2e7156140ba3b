// Image formats beside the OCI archive: Docker archives (made by skopeo, and by hand), zstd
// layers (made by skopeo and by the zstd CLI), and a blob directory as the source of layers.
// Each good one unpacks the same tree as the OCI original; each bad one is INVALID_IMAGE and
// leaves nothing in the store.
import t from 'tap';
type Test = typeof t;
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { baseLayerTar, buildExamples } from '../../scripts/images/build.mjs';
import { isSmError } from '../../src/errors.js';
import { createZstdDecompressor, extractLayers, readImage, type ImageInfo } from '../../src/images/index.js';
import { zstdExitError } from '../../src/images/zstd.js';
import { buildImage, gzip, imageLayout, install, json, MT, sha256, tarBuffer, tempDir, tree, writeArchive } from './fixture.js';

const HAVE_BUSYBOX = existsSync('/bin/busybox');
const HAVE_SKOPEO = existsSync('/usr/bin/skopeo');
const HAVE_ZSTD = spawnSync('zstd', ['--version']).status === 0;
const MT_ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';
const needs = (...what: [boolean, string][]) => {
  const missing = what.filter(([ok]) => !ok).map(([, pkg]) => pkg);
  return missing.length ? `needs ${missing.join(', ')} (apt-get install ${missing.join(' ')})` : false;
};

/** A comparable description of a tree: type, mode, size, content hash or link target, by path. */
function snapshot(dir: string): string[] {
  return tree(dir).map((p) => {
    const full = join(dir, p);
    const st = lstatSync(full);
    const mode = (st.mode & 0o7777).toString(8);
    if (st.isSymbolicLink()) return `${p} l ${readlinkSync(full)}`;
    if (st.isDirectory()) return `${p} d ${mode}`;
    if (st.isCharacterDevice()) return `${p} c ${st.rdev}`;
    return `${p} f ${mode} ${st.size} ${createHash('sha256').update(readFileSync(full)).digest('hex')} n${st.nlink}`;
  });
}

function layerSnapshots(image: ImageInfo, root: string): string[][] {
  return image.layers.map((l) => snapshot(join(root, 'layers', l.digest.slice(7))));
}

async function rejected(t: Test, p: Promise<unknown>, code: string, reason: RegExp, storeDir: string): Promise<void> {
  const before = existsSync(storeDir) ? tree(storeDir) : [];
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(isSmError(err, code as 'INVALID_IMAGE'), `rejected with ${code} (got ${String((err as Error | null)?.message ?? 'success')})`);
  t.match((err as Error | null)?.message ?? '', reason, 'the reason names the problem');
  t.same(existsSync(storeDir) ? tree(storeDir) : [], before, 'nothing left in the store');
}

/** zstd child processes of this test process still alive. */
function zstdChildren(): number[] {
  const out: number[] = [];
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const m = /^\d+ \((.*)\) \S (\d+)/.exec(stat);
      if (m && m[1] === 'zstd' && Number(m[2]) === process.pid) out.push(Number(pid));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** A hand-made Docker archive: manifest.json, `<hex>.json` config, layer tars at `layerPath`. */
function dockerArchive(path: string, images: { tags: string[]; layers: Buffer[]; diffIds?: string[]; config?: object; layerPath?: (hex: string, i: number) => string }[]) {
  const files = new Map<string, Buffer>();
  const manifest = images.map((img) => {
    const diffIds = img.diffIds ?? img.layers.map((l) => sha256(l));
    const config = json({ architecture: 'amd64', os: 'linux', config: { Entrypoint: ['/bin/sh'] }, rootfs: { type: 'layers', diff_ids: diffIds }, ...(img.config ?? {}) });
    const configName = `${sha256(config).slice(7)}.json`;
    files.set(configName, config);
    const layers = img.layers.map((l, i) => {
      const name = img.layerPath ? img.layerPath(sha256(l).slice(7), i) : `${sha256(l).slice(7)}.tar`;
      files.set(name, l);
      return name;
    });
    return { Config: configName, RepoTags: img.tags, Layers: layers };
  });
  files.set('manifest.json', json(manifest));
  writeArchive(
    path,
    [...files].map(([p, data]) => ({ path: p, data })),
  );
}

const file = (path: string, data = 'x', mode = 0o644) => ({ path, data, mode });

/**
 * An OCI archive of busybox + an app layer whose config has true diff_ids (sha256 of each
 * uncompressed tar), which skopeo copies unchanged into a Docker archive's config.
 * (scripts/images/oci.mjs puts the digests of the gzip blobs there, which only a Docker archive
 * made from its examples would show: smd rightly rejects those.)
 */
function ociWithDiffIds(dir: string): string {
  const base = baseLayerTar();
  const app = tarBuffer([{ path: 'www/', type: 'dir', mode: 0o755 }, file('www/index.html', 'hello from docker\n'), { path: 'bin/hi', type: 'symlink', linkpath: 'busybox' }]);
  const img = imageLayout({
    layers: [base, app].map((raw) => ({ data: gzip(raw), mediaType: MT.layerTarGzip, diffId: sha256(raw) })),
    config: { Entrypoint: ['/bin/busybox', 'httpd'], Cmd: ['-f'], Env: ['A=1'], WorkingDir: '/www' },
    annotations: { 'io.smd.id': 'hello' },
    refName: 'hello:v1',
    platform: { os: 'linux', architecture: 'amd64' },
  });
  const path = join(dir, 'hello-oci.tar');
  writeArchive(path, img.files);
  return path;
}

t.test('a Docker archive made by skopeo unpacks the same tree as the OCI original', { skip: needs([HAVE_BUSYBOX, 'busybox-static'], [HAVE_SKOPEO, 'skopeo']) }, async (t) => {
  const dir = tempDir(t);
  const oci = ociWithDiffIds(dir);
  const docker = join(dir, 'hello-docker.tar');
  execFileSync('skopeo', ['copy', '-q', `oci-archive:${oci}`, `docker-archive:${docker}:hello:v1`]);

  const a = await install(oci, join(dir, 'store-oci'));
  const b = await install(docker, join(dir, 'store-docker'));
  t.equal(b.image.format, 'docker');
  t.equal(a.image.format, 'oci');
  t.equal(b.image.blobs.kind, 'archive');
  t.equal(b.image.refName, 'docker.io/library/hello:v1', 'RepoTags[0] is the ref name');
  t.same(b.image.annotations, {}, 'no annotations from a Docker archive');
  t.same(b.image.config, a.image.config, 'the same config');
  t.same(b.image.platform, { os: 'linux', architecture: 'amd64', variant: null });
  t.equal(b.image.layers.length, 2);
  t.same(
    b.image.layers.map((l) => [l.mediaType, l.compression]),
    [
      [MT.layerTar, 'none'],
      [MT.layerTar, 'none'],
    ],
  );
  t.same(b.result.extracted.length, 2);
  t.same(layerSnapshots(b.image, join(dir, 'store-docker')), layerSnapshots(a.image, join(dir, 'store-oci')), 'same trees, layer by layer');

  // Layer digests are the config's diff_ids; the manifest digest is of the documented synthesis.
  const configName = JSON.parse(execFileSync('tar', ['-xOf', docker, 'manifest.json'], { encoding: 'utf8' }))[0].Config as string;
  const configBytes = execFileSync('tar', ['-xOf', docker, configName]);
  t.equal(b.image.configDigest, sha256(configBytes));
  t.same(
    b.image.layers.map((l) => l.digest),
    JSON.parse(configBytes.toString()).rootfs.diff_ids,
  );
  const synthesized = JSON.stringify({
    schemaVersion: 2,
    mediaType: MT.manifest,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: b.image.configDigest, size: configBytes.length },
    layers: b.image.layers.map((l) => ({ mediaType: MT.layerTar, digest: l.digest, size: l.size })),
  });
  t.equal(b.image.manifestDigest, sha256(Buffer.from(synthesized)), 'manifestDigest: sha256 of the canonical synthesized manifest');
  t.equal((await readImage(docker)).manifestDigest, b.image.manifestDigest, 'deterministic');

  // Older `docker save` layout: Layers name `<id>/layer.tar`, here links to `../<hex>.tar`.
  const x = join(dir, 'x');
  mkdirSync(x);
  execFileSync('tar', ['-C', x, '-xf', docker]);
  const m = JSON.parse(readFileSync(join(x, 'manifest.json'), 'utf8'));
  const ids = readdirSync(x).filter((n) => existsSync(join(x, n, 'layer.tar')));
  const byTarget = new Map(ids.map((id) => [readlinkSync(join(x, id, 'layer.tar')).replace('../', ''), `${id}/layer.tar`]));
  m[0].Layers = m[0].Layers.map((l: string) => byTarget.get(l));
  t.ok(m[0].Layers.every(Boolean), 'every layer has a <id>/layer.tar link');
  writeFileSync(join(x, 'manifest.json'), JSON.stringify(m));
  const linked = join(dir, 'linked.tar');
  execFileSync('tar', ['-C', x, '-cf', linked, '.']);
  const c = await install(linked, join(dir, 'store-linked'));
  t.same(layerSnapshots(c.image, join(dir, 'store-linked')), layerSnapshots(a.image, join(dir, 'store-oci')), 'same trees through the links');
  t.equal(c.image.manifestDigest, b.image.manifestDigest, 'same image, same digest');
});

t.test('hand-made Docker archives: choice by RepoTag, <id>/layer.tar paths, gzip outer archive', async (t) => {
  const dir = tempDir(t);
  const one = tarBuffer([file('one', '1')]);
  const two = tarBuffer([file('two', '2')]);
  const path = join(dir, 'multi.tar');
  dockerArchive(path, [
    { tags: ['localhost/first:1'], layers: [one] },
    { tags: ['localhost/second:1', 'second:latest'], layers: [one, two], layerPath: (hex) => `${hex}/layer.tar` },
  ]);
  t.equal((await readImage(path)).refName, 'localhost/first:1', 'no ref: the first image');
  t.equal((await readImage(path, { ref: 'nope' })).refName, 'localhost/first:1', 'unknown ref: the first image');
  const second = await readImage(path, { ref: 'second:latest' });
  t.equal(second.refName, 'localhost/second:1');
  t.equal(second.layers.length, 2);
  t.equal((await readImage(path, { ref: 'second:1' })).manifestDigest, second.manifestDigest, 'a tag matches without localhost/');
  const root = join(dir, 'store');
  const { result } = await install(path, root, undefined, 'localhost/second:1');
  t.equal(result.extracted.length, 2);
  t.equal(readFileSync(join(root, 'layers', sha256(two).slice(7), 'two'), 'utf8'), '2');

  const gz = join(dir, 'multi.tar.gz');
  writeFileSync(gz, gzip(readFileSync(path)));
  const g = await readImage(gz, { ref: 'second:latest' });
  t.equal(g.blobs.kind === 'archive' && g.blobs.gzip, true);
  t.equal(g.manifestDigest, second.manifestDigest);
});

t.test('bad Docker archives are INVALID_IMAGE and leave nothing', async (t) => {
  const dir = tempDir(t);
  const root = join(dir, 'store');
  mkdirSync(join(root, 'layers'), { recursive: true });
  const good = tarBuffer([file('f', 'good')]);
  const evil = tarBuffer([file('f', 'evil')]);

  const tampered = join(dir, 'tampered.tar');
  dockerArchive(tampered, [{ tags: ['x:1'], layers: [evil], diffIds: [sha256(good)] }]);
  await rejected(t, install(tampered, root), 'INVALID_IMAGE', /digest mismatch: content hashes to sha256:/, root);

  const compressed = join(dir, 'compressed.tar');
  dockerArchive(compressed, [{ tags: ['x:1'], layers: [gzip(good)], diffIds: [sha256(good)] }]);
  await rejected(t, install(compressed, root), 'INVALID_IMAGE', /layer 0 .* is gzip-compressed/, root);

  const counts = join(dir, 'counts.tar');
  dockerArchive(counts, [{ tags: ['x:1'], layers: [good], diffIds: [sha256(good), sha256(evil)] }]);
  await rejected(t, install(counts, root), 'INVALID_IMAGE', /names 1 layers but the config's rootfs\.diff_ids has 2/, root);

  const missing = join(dir, 'missing.tar');
  writeArchive(missing, [{ path: 'manifest.json', data: json([{ Config: 'c.json', RepoTags: null, Layers: ['nope.tar'] }]) }, { path: 'c.json', data: json({ rootfs: { type: 'layers', diff_ids: [sha256(good)] } }) }]);
  await rejected(t, install(missing, root), 'INVALID_IMAGE', /layer 0 nope\.tar is missing from the archive/, root);

  const escape = join(dir, 'escape.tar');
  writeArchive(escape, [{ path: 'manifest.json', data: json([{ Config: '../c.json', Layers: [] }]) }]);
  await rejected(t, install(escape, root), 'INVALID_IMAGE', /unsafe path "\.\.\/c\.json"/, root);

  const shape = join(dir, 'shape.tar');
  writeArchive(shape, [{ path: 'manifest.json', data: json([]) }]);
  await rejected(t, install(shape, root), 'INVALID_IMAGE', /manifest\.json is not a valid document: \(root\): names no image/, root);
});

t.test('zstd layers made by skopeo unpack the same tree as gzip ones', { skip: needs([HAVE_BUSYBOX, 'busybox-static'], [HAVE_SKOPEO, 'skopeo'], [HAVE_ZSTD, 'zstd']) }, async (t) => {
  const dir = tempDir(t);
  const summary = buildExamples(join(dir, 'images'), { versions: [1] });
  const oci = summary.images.find((i: { name: string }) => i.name === 'hello-http').path as string;
  const z = join(dir, 'hello-zstd.tar');
  execFileSync('skopeo', ['copy', '-q', '--dest-compress-format', 'zstd', '--dest-compress', `oci-archive:${oci}`, `oci-archive:${z}`]);
  const a = await install(oci, join(dir, 'store-gzip'));
  let progress = 0;
  const image = await readImage(z);
  t.same(
    image.layers.map((l) => [l.mediaType, l.compression]),
    [
      [MT_ZSTD, 'zstd'],
      [MT_ZSTD, 'zstd'],
    ],
  );
  const root = join(dir, 'store-zstd');
  const r = await extractLayers(image, { wanted: new Set(image.layers.map((l) => l.digest)), destFor: (d) => join(root, 'layers', d.slice(7)), onProgress: (done) => (progress = done) });
  t.equal(r.extracted.length, 2);
  t.equal(progress, image.layers.reduce((s, l) => s + l.size, 0), 'progress counts the compressed bytes');
  t.same(layerSnapshots(image, root), layerSnapshots(a.image, join(dir, 'store-gzip')), 'same trees, layer by layer');
  t.same(zstdChildren(), [], 'no zstd process left');
});

t.test('hand-made zstd layers: good, bomb, window bomb, damaged, mislabelled', { skip: needs([HAVE_ZSTD, 'zstd']) }, async (t) => {
  const dir = tempDir(t);
  const zstd = (input: Buffer, ...args: string[]) => execFileSync('zstd', ['-q', '-c', ...args], { input, maxBuffer: 256 * 1024 * 1024 });
  const content = tarBuffer([{ path: 'd/', type: 'dir', mode: 0o755 }, file('d/f', 'hello zstd'), { path: 'l', type: 'symlink', linkpath: 'd/f' }]);

  // Good, with a skippable frame in front.
  const skippable = Buffer.concat([Buffer.from([0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]), zstd(content)]);
  for (const [name, data] of [
    ['plain', zstd(content)],
    ['skippable frame first', skippable],
  ] as const) {
    const { path } = buildImage(dir, `good-${name.replace(/ /g, '-')}.tar`, [{ data, mediaType: MT_ZSTD }]);
    const root = join(dir, `store-${name.replace(/ /g, '-')}`);
    const { image, result } = await install(path, root);
    t.equal(result.extracted.length, 1, `${name}: extracted`);
    t.equal(readFileSync(join(root, 'layers', image.layers[0]!.digest.slice(7), 'l'), 'utf8'), 'hello zstd', `${name}: content`);
  }

  const root = join(dir, 'store');
  mkdirSync(join(root, 'layers'), { recursive: true });
  const installOf = (name: string, data: Buffer, mediaType: string, limits?: { maxUnpackedBytes: number }) => install(buildImage(dir, `${name}.tar`, [{ data, mediaType }]).path, root, limits);

  const bomb = zstd(tarBuffer([{ path: 'zeros', data: Buffer.alloc(64 * 1024 * 1024) }]), '-19');
  t.ok(bomb.length < 64 * 1024, `bomb is small (${bomb.length} bytes)`);
  await rejected(t, installOf('bomb', bomb, MT_ZSTD, { maxUnpackedBytes: 8 * 1024 * 1024 }), 'INVALID_IMAGE', /unpacked size exceeds maxUnpackedBytes=8388608/, root);

  // Piped, so the frame declares the whole 2 GiB window: more than the decoder may allocate.
  const windowBomb = execFileSync('sh', ['-c', 'head -c 3000000 /dev/zero | zstd -q -c --long=31'], { maxBuffer: 1 << 24 });
  await rejected(t, installOf('window', windowBomb, MT_ZSTD), 'INVALID_IMAGE', /zstd frame needs a window larger than the 134217728-byte limit/, root);

  const whole = zstd(Buffer.concat([content, tarBuffer([file('big', createHash('sha512').update('x').digest('hex').repeat(4000))])]));
  const damaged = Buffer.from(whole);
  for (let i = 40; i < damaged.length - 8; i += 97) damaged[i] ^= 0x5a;
  await rejected(t, installOf('damaged', damaged, MT_ZSTD), 'INVALID_IMAGE', /zstd stream is damaged or truncated/, root);
  await rejected(t, installOf('truncated', whole.subarray(0, whole.length - 10), MT_ZSTD), 'INVALID_IMAGE', /zstd stream is damaged or truncated/, root);

  await rejected(t, installOf('zstd-as-tar', zstd(content), MT.layerTar), 'INVALID_IMAGE', /says uncompressed but the blob is zstd/, root);
  await rejected(t, installOf('zstd-as-gzip', zstd(content), MT.layerTarGzip), 'INVALID_IMAGE', /says gzip but the blob is zstd/, root);
  await rejected(t, installOf('gzip-as-zstd', gzip(content), MT_ZSTD), 'INVALID_IMAGE', /says zstd but the blob is gzip/, root);
  await rejected(t, installOf('tar-as-zstd', content, MT_ZSTD), 'INVALID_IMAGE', /says zstd but the blob is not zstd/, root);
  await rejected(t, installOf('zstd-twice', zstd(zstd(content)), MT_ZSTD), 'INVALID_IMAGE', /compressed twice \(zstd inside zstd\)/, root);
  await rejected(t, installOf('zstd-in-gzip', gzip(zstd(content)), MT.layerTarGzip), 'INVALID_IMAGE', /compressed twice \(zstd inside gzip\)/, root);

  t.same(zstdChildren(), [], 'every zstd process ended (killed on abort)');
});

t.test('zstd decompressor: a missing program is UNAVAILABLE; exit statuses map to errors', async (t) => {
  const d = createZstdDecompressor({ what: 'layer x', program: '/nonexistent/zstd' });
  const err = await new Promise<unknown>((resolve) => {
    d.on('error', resolve);
    d.on('end', () => resolve(null));
    d.resume();
    d.end(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]));
  });
  t.ok(isSmError(err, 'UNAVAILABLE'));
  t.match((err as Error).message, /\/nonexistent\/zstd: program not found.*Debian package "zstd"/);

  const o = { what: 'layer y', program: 'zstd', memoryLimitBytes: 1024 };
  t.equal(zstdExitError(0, null, '', o), null);
  const mem = zstdExitError(1, null, '/*stdin*\\ : Decoding error (36) : Frame requires too much memory for decoding \n/*stdin*\\ : Window size larger than maximum : 2147483648 > 134217728 \n/*stdin*\\ : Use --long=31 or --memory=2048MB \n', o);
  t.equal(mem?.code, 'INVALID_IMAGE');
  t.equal(mem?.message, 'layer y: zstd frame needs a window larger than the 1024-byte limit (Decoding error (36) : Frame requires too much memory for decoding; Window size larger than maximum : 2147483648 > 134217728)');
  t.equal(zstdExitError(1, null, 'zstd: /*stdin*\\: unsupported format \n', o)?.message, 'layer y: zstd stream is damaged or truncated (unsupported format)');
  t.equal(zstdExitError(null, 'SIGSEGV', '', o)?.code, 'INTERNAL');
});

t.test('a blob directory as the source: extracts, and rejects a tampered or missing blob', { skip: needs([HAVE_ZSTD, 'zstd']) }, async (t) => {
  const dir = tempDir(t);
  const zstd = (input: Buffer) => execFileSync('zstd', ['-q', '-c'], { input });
  const layers = [
    { data: gzip(tarBuffer([file('a', 'A')])), mediaType: MT.layerTarGzip },
    { data: zstd(tarBuffer([file('b', 'B')])), mediaType: MT_ZSTD },
    { data: tarBuffer([file('c', 'C')]), mediaType: MT.layerTar },
  ];
  const { path } = buildImage(dir, 'img.tar', layers);
  const fromArchive = await install(path, join(dir, 'store-archive'));
  const blobs = join(dir, 'blobs');
  mkdirSync(blobs);
  for (const l of layers) writeFileSync(join(blobs, sha256(l.data).slice(7)), l.data);
  const image: ImageInfo = { ...(await readImage(path)), blobs: { kind: 'dir', root: blobs } };

  const root = join(dir, 'store');
  const all = new Set(image.layers.map((l) => l.digest));
  const opts = { wanted: all, destFor: (d: string) => join(root, 'layers', d.slice(7)) };
  mkdirSync(join(root, 'layers'), { recursive: true });

  // Tampered: same size, one byte changed.
  const victim = join(blobs, sha256(layers[2]!.data).slice(7));
  const bad = Buffer.from(layers[2]!.data);
  bad[600] ^= 1;
  writeFileSync(victim, bad);
  await rejected(t, extractLayers(image, opts), 'INVALID_IMAGE', /digest mismatch/, root);
  writeFileSync(victim, Buffer.concat([layers[2]!.data, Buffer.from('x')]));
  await rejected(t, extractLayers(image, opts), 'INVALID_IMAGE', /size mismatch/, root);
  execFileSync('rm', [victim]);
  await rejected(t, extractLayers(image, opts), 'INVALID_IMAGE', new RegExp(`missing blob ${image.layers[2]!.digest}`), root);
  writeFileSync(victim, layers[2]!.data);

  let progress = 0;
  const r = await extractLayers(image, { ...opts, onProgress: (done) => (progress = done) });
  t.equal(r.extracted.length, 3);
  t.equal(progress, layers.reduce((s, l) => s + l.data.length, 0));
  t.same(layerSnapshots(image, root), layerSnapshots(fromArchive.image, join(dir, 'store-archive')), 'same trees as from the archive');
  const again = await extractLayers(image, opts);
  t.same(again, { extracted: [], present: [...all] }, 'present layers are not read again');
});
