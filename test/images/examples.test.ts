// Good images: the example images read and extract correctly, a shared base layer is unpacked
// once, whiteouts become overlayfs whiteouts, and the reader's choices (ref, platform, nested
// index, gzip archive, empty layer) behave as the spec says.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildExamples } from '../../scripts/images/build.mjs';
import { extractLayers, readImage } from '../../src/images/index.js';
import { isSmError } from '../../src/errors.js';
import { blobPath, buildImage, getXattr, gzip, install, json, MT, sha256, tarBuffer, tempDir, tree, writeArchive } from './fixture.js';

const HAVE_BUSYBOX = existsSync('/bin/busybox');

t.test('example images: read, extract, share the base layer', { skip: HAVE_BUSYBOX ? false : 'needs busybox-static' }, async (t) => {
  const dir = tempDir(t);
  const summary = buildExamples(join(dir, 'images'), { versions: [1, 2] });
  const again = buildExamples(join(dir, 'images-again'), { versions: [1, 2] });
  t.same(
    again.images.map((i: { manifestDigest: string }) => i.manifestDigest),
    summary.images.map((i: { manifestDigest: string }) => i.manifestDigest),
    'deterministic: same input, same digests',
  );
  const byName = (n: string, v: number) => summary.images.find((i: { name: string; version: number }) => i.name === n && i.version === v);
  const root = join(dir, 'store');

  const v1 = byName('hello-http', 1);
  const { image, result } = await install(v1.path, root);
  t.equal(image.manifestDigest, v1.manifestDigest);
  t.same(image.config.entrypoint, ['/bin/busybox', 'httpd']);
  t.same(image.config.cmd, ['-f', '-p', '8080', '-h', '/www']);
  t.same(image.config.workingDir, '/www');
  t.ok(image.config.env.includes('HELLO_VERSION=1'));
  t.equal(image.refName, 'hello-http:v1');
  t.equal(image.annotations['io.smd.version'], '1');
  t.equal(image.layers.length, 2);
  t.equal(image.layers[0]!.digest, summary.baseLayer);
  t.equal(result.extracted.length, 2);
  t.same(result.present, []);

  const base = join(root, 'layers', summary.baseLayer.slice(7));
  const app = join(root, 'layers', image.layers[1]!.digest.slice(7));
  t.same(readFileSync(join(base, 'bin/busybox')), readFileSync('/bin/busybox'), 'busybox content intact');
  t.equal(statSync(join(base, 'bin/busybox')).mode & 0o7777, 0o755);
  t.equal(readlinkSync(join(base, 'bin/sh')), 'busybox', 'applet symlink');
  t.equal(readlinkSync(join(base, 'usr/bin/env')), '/bin/busybox', 'absolute symlink kept (container-root path)');
  t.equal(statSync(join(base, 'bin/ash')).ino, statSync(join(base, 'bin/busybox')).ino, 'applet hard link');
  t.equal(statSync(join(base, 'tmp')).mode & 0o7777, 0o1777);
  t.equal(statSync(join(base, 'bin/busybox')).mtime.getTime(), 1700000000 * 1000, 'mtime from the archive');
  t.match(readFileSync(join(app, 'www/index.html'), 'utf8'), /version 1/);
  t.same(tree(join(root, 'layers')).filter((p) => p.includes('staging')), [], 'no staging left');

  // The base layer runs: busybox from the extracted tree.
  t.match(execFileSync(join(base, 'bin/sh'), ['-c', 'echo ok'], { encoding: 'utf8' }), /ok/);

  // v2 shares the base layer: it is not unpacked again.
  writeFileSync(join(base, '.marker'), 'kept');
  const v2 = byName('hello-http', 2);
  const image2 = await readImage(v2.path);
  let progressCalls = 0;
  let last: [number, number] = [0, 0];
  const r2 = await extractLayers(image2, {
    wanted: new Set(image2.layers.map((l) => l.digest)),
    destFor: (d) => join(root, 'layers', d.slice(7)),
    onProgress: (a, b) => {
      progressCalls++;
      last = [a, b];
    },
  });
  t.same(r2.present, [summary.baseLayer], 'base layer reported present');
  t.same(
    r2.extracted.map((l) => l.digest),
    [image2.layers[1]!.digest],
    'only the app layer unpacked',
  );
  t.equal(readFileSync(join(base, '.marker'), 'utf8'), 'kept', 'the base layer directory was not touched');
  t.ok(progressCalls >= 1);
  t.equal(last[0], last[1], 'progress reaches the total');
  t.equal(last[1], image2.layers[1]!.size, 'the total counts only the layers unpacked');
  t.match(readFileSync(join(root, 'layers', image2.layers[1]!.digest.slice(7), 'www/index.html'), 'utf8'), /version 2/);

  // The other examples read with the right entrypoints.
  const writer = await readImage(byName('writer', 1).path);
  t.same(writer.config.entrypoint, ['/bin/sh', '/app/writer.sh']);
  const failing = await readImage(byName('failing', 1).path);
  t.same(failing.config.entrypoint, ['/bin/sh', '/app/fail.sh']);
  const { result: rf } = await install(byName('failing', 1).path, root);
  const failDir = rf.extracted[0]!.path;
  const run = spawnSync(join(base, 'bin/sh'), [join(failDir, 'app/fail.sh')], { encoding: 'utf8' });
  t.equal(run.status, 3, 'failing exits with code 3');
  t.match(run.stderr, /fatal error/);
  const pkg = await readImage(summary.images.find((i: { name: string }) => i.name === 'layer-base').path);
  t.equal(pkg.layerId, 'busybox-base');
  t.same(
    pkg.layers.map((l) => l.digest),
    [summary.baseLayer],
  );
});

t.test('whiteouts and opaque directories become overlayfs whiteouts', async (t) => {
  const dir = tempDir(t);
  const { path } = buildImage(dir, 'wh.tar', [
    {
      entries: [
        { path: 'etc/a', data: 'a' },
        { path: 'etc/b', data: 'b' },
        { path: 'www/old.html', data: 'old' },
        { path: 'www/keep.html', data: 'keep' },
        { path: 'opt/x', data: 'x' },
        { path: 'gone', data: 'gone' },
        { path: 'same', data: 'lower' },
      ],
    },
    {
      entries: [
        { path: 'www/.wh.old.html', data: '' },
        { path: 'opt/', type: 'dir', mode: 0o755 },
        { path: 'opt/.wh..wh..opq', data: '' },
        { path: 'opt/new', data: 'new' },
        { path: 'etc/.wh.b', data: '' },
        { path: '.wh.gone', data: '' },
        { path: '.wh.same', data: '' },
        { path: 'same', data: 'upper' }, // same-layer entry wins over its whiteout
        { path: '.wh..wh.plnk/', type: 'dir' }, // aufs bookkeeping: ignored
      ],
    },
  ]);
  const root = join(dir, 'store');
  const { image } = await install(path, root);
  const [l1, l2] = image.layers.map((l) => join(root, 'layers', l.digest.slice(7)));
  const isWhiteout = (p: string) => {
    const st = lstatSync(p);
    return st.isCharacterDevice() && st.rdev === 0;
  };
  t.ok(isWhiteout(join(l2!, 'www/old.html')), '.wh.old.html → char device 0/0');
  t.ok(isWhiteout(join(l2!, 'etc/b')));
  t.ok(isWhiteout(join(l2!, 'gone')));
  t.notOk(existsSync(join(l2!, 'www/.wh.old.html')), 'the .wh. file itself is not kept');
  t.equal(readFileSync(join(l2!, 'same'), 'utf8'), 'upper');
  t.notOk(existsSync(join(l2!, '.wh..wh.plnk')));
  const opq = getXattr(join(l2!, 'opt'), 'trusted.overlay.opaque');
  if (opq === null && !existsSync('/usr/bin/python3')) t.skip('no python3 to read xattrs');
  else t.equal(opq, 'y', 'opaque directory marked with trusted.overlay.opaque=y');
  t.notOk(existsSync(join(l2!, 'opt/.wh..wh..opq')));

  // The real check: overlayfs composes the two layers as intended.
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  const script = `mount -t overlay overlay -o ro,lowerdir=${l2}:${l1} ${mnt} && cd ${mnt} && find . | sort && cat same`;
  const r = spawnSync('unshare', ['-m', 'sh', '-c', script], { encoding: 'utf8' });
  if (r.status !== 0) {
    t.skip(`overlay mount not possible here: ${r.stderr.trim()}`);
    return;
  }
  const seen = r.stdout.split('\n');
  t.ok(seen.includes('./www/keep.html'));
  t.notOk(seen.includes('./www/old.html'), 'whited-out file hidden');
  t.notOk(seen.includes('./etc/b'));
  t.ok(seen.includes('./etc/a'));
  t.notOk(seen.includes('./gone'));
  t.notOk(seen.includes('./opt/x'), 'opaque directory hides the lower content');
  t.ok(seen.includes('./opt/new'));
  t.match(r.stdout, /upper/);
});

t.test('ref selection, host platform, nested index, gzip archive, index after blobs', async (t) => {
  const dir = tempDir(t);
  const layerA = gzip(tarBuffer([{ path: 'a', data: 'A' }]));
  const layerB = gzip(tarBuffer([{ path: 'b', data: 'B' }]));
  const cfg = json({ architecture: 'amd64', os: 'linux', 'os.version': '7.1', config: { Cmd: ['run'], User: '1000:1000' } });
  const cfgArm = json({ architecture: 'arm64', os: 'linux', config: { Cmd: ['arm'] } });
  const man = (layer: Buffer, config: Buffer, annotations?: Record<string, string>) =>
    json({
      schemaVersion: 2,
      mediaType: MT.manifest,
      config: { mediaType: MT.config, digest: sha256(config), size: config.length },
      layers: [{ mediaType: MT.layerTarGzip, digest: sha256(layer), size: layer.length }],
      ...(annotations ? { annotations } : {}),
    });
  const mA = man(layerA, cfg, { 'io.smd.layer.id': 'layer-a', 'io.smd.ttl': '3' });
  const mArm = man(layerB, cfgArm);
  const desc = (m: Buffer, extra: object = {}) => ({ mediaType: MT.manifest, digest: sha256(m), size: m.length, ...extra });
  const host = process.arch === 'x64' ? 'amd64' : process.arch;
  const nested = json({
    schemaVersion: 2,
    mediaType: MT.index,
    manifests: [desc(mArm, { platform: { os: 'linux', architecture: host === 'arm64' ? 'amd64' : 'arm64' } }), desc(mA, { platform: { os: 'linux', architecture: host, 'os.version': '7.2' } })],
  });
  const index = json({
    schemaVersion: 2,
    manifests: [
      { mediaType: MT.index, digest: sha256(nested), size: nested.length, annotations: { 'org.opencontainers.image.ref.name': 'multi' } },
      desc(mArm, { annotations: { 'org.opencontainers.image.ref.name': 'other' } }),
    ],
  });
  const blobs = [layerA, layerB, cfg, cfgArm, mA, mArm, nested].map((b) => ({ path: blobPath(sha256(b)), data: b }));
  // index.json and oci-layout after the blobs: the reader must not care about order.
  const files = [...blobs, { path: 'index.json', data: index }, { path: 'oci-layout', data: json({ imageLayoutVersion: '1.0.0' }) }];
  const archive = writeArchive(join(dir, 'multi.tar.gz'), files, { gzip: true });

  const img = await readImage(archive, { ref: 'multi' });
  t.equal(img.blobs.kind === 'archive' && img.blobs.gzip, true);
  t.equal(img.manifestDigest, sha256(mA), 'nested index followed to the host platform');
  t.same(img.config.cmd, ['run']);
  t.equal(img.config.user, '1000:1000');
  t.equal(img.osVersion, '7.2', 'os.version from the platform wins over the config');
  t.equal(img.layerId, 'layer-a');
  t.equal(img.annotations['io.smd.ttl'], '3');
  t.equal(img.refName, 'multi');

  const other = await readImage(archive, { ref: 'other' });
  t.equal(other.manifestDigest, sha256(mArm), 'ref annotation chosen');
  const fallback = await readImage(archive, { ref: 'nope' });
  t.equal(fallback.manifestDigest, sha256(mA), 'unknown ref: first entry (no platform), nested index → host platform');

  const root = join(dir, 'store');
  mkdirSync(join(root, 'layers'), { recursive: true });
  const r = await extractLayers(img, { wanted: new Set([img.layers[0]!.digest]), destFor: (d) => join(root, 'layers', d.slice(7)) });
  t.equal(readFileSync(join(r.extracted[0]!.path, 'a'), 'utf8'), 'A');

  const err = await extractLayers(img, { wanted: new Set([sha256(layerB)]), destFor: (d) => join(root, 'layers', d.slice(7)) }).catch((e) => e);
  t.ok(isSmError(err, 'NOT_FOUND'), 'a digest that is not a layer of the image is refused');
});

t.test('an empty layer (only zero blocks) and an empty tar extract to empty directories', async (t) => {
  const dir = tempDir(t);
  const { path } = buildImage(dir, 'empty.tar', [{ data: gzip(Buffer.alloc(1024)), mediaType: MT.dockerLayer }, { data: Buffer.alloc(0), mediaType: MT.layerTar }, { entries: [{ path: 'f', data: 'x' }] }]);
  const root = join(dir, 'store');
  const { result } = await install(path, root);
  t.equal(result.extracted.length, 3);
  t.same(tree(result.extracted[0]!.path), []);
  t.same(tree(result.extracted[1]!.path), []);
  t.same(tree(result.extracted[2]!.path), ['f']);
});

t.test('duplicate entries of the same type: the later one wins, hard links are not written through', async (t) => {
  const dir = tempDir(t);
  const { path } = buildImage(dir, 'dup.tar', [
    {
      entries: [
        { path: 'd/', type: 'dir', mode: 0o700 },
        { path: 'f', data: 'first' },
        { path: 'h', type: 'hardlink', linkpath: 'f' },
        { path: 'h', data: 'replaced' }, // must not change f through the link
        { path: 'd/', type: 'dir', mode: 0o750 },
        { path: 's', type: 'symlink', linkpath: 'f' },
        { path: 's', type: 'symlink', linkpath: 'd' },
      ],
    },
  ]);
  const { result } = await install(path, join(dir, 'store'));
  const l = result.extracted[0]!.path;
  t.equal(readFileSync(join(l, 'f'), 'utf8'), 'first');
  t.equal(readFileSync(join(l, 'h'), 'utf8'), 'replaced');
  t.equal(statSync(join(l, 'd')).mode & 0o777, 0o750);
  t.equal(readlinkSync(join(l, 's')), 'd');
});

t.test('a long path (pax header) extracts', async (t) => {
  const dir = tempDir(t);
  const long = 'deep/' + 'x'.repeat(80) + '/' + 'y'.repeat(80) + '/file.txt';
  const { path } = buildImage(dir, 'long.tar', [{ entries: [{ path: long, data: 'long' }] }]);
  const { result } = await install(path, join(dir, 'store'));
  t.equal(readFileSync(join(result.extracted[0]!.path, long), 'utf8'), 'long');
});

t.test('two installs of the same layer at once: one copy lands, nothing is left over', async (t) => {
  const dir = tempDir(t);
  const { path } = buildImage(dir, 'race.tar', [{ entries: Array.from({ length: 200 }, (_, i) => ({ path: `d/f${i}`, data: `file ${i}\n`.repeat(100) })) }]);
  const image = await readImage(path);
  const store = join(dir, 'layers');
  mkdirSync(store);
  const opts = { wanted: new Set([image.layers[0]!.digest]), destFor: (d: string) => join(store, d.slice(7)) };
  const [a, b] = await Promise.all([extractLayers(image, opts), extractLayers(image, opts)]);
  t.equal(a.extracted.length + b.extracted.length + a.present.length + b.present.length, 2);
  t.ok(a.extracted.length + b.extracted.length >= 1);
  t.same(tree(store).filter((p) => !p.includes('/')), [image.layers[0]!.digest.slice(7)], 'one layer directory, no staging left');
  t.equal(tree(join(store, image.layers[0]!.digest.slice(7), 'd')).length, 200);
});
