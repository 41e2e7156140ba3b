// Hostile and broken archives: each is rejected with INVALID_IMAGE and a reason naming the
// problem, and leaves nothing behind (no staging directory, nothing outside it).
import t from 'tap';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { isSmError } from '../../src/errors.js';
import type { ImageLimits } from '../../src/images/index.js';
import { blobPath, buildImage, gzip, install, MT, replaceFile, sha256, tarBuffer, tempDir, tree, type LayerSpec } from './fixture.js';

type Files = { path: string; data: Buffer }[];

async function rejects(tt: typeof t, layers: LayerSpec[], reason: RegExp, opts: { limits?: Partial<ImageLimits>; edit?: (files: Files) => Files; gzipArchive?: boolean } = {}) {
  const dir = tempDir(tt);
  const { path } = buildImage(dir, 'image.tar', layers, {
    ...(opts.gzipArchive ? { gzipArchive: true } : {}),
    ...(opts.edit ? { edit: opts.edit } : {}),
  });
  const root = join(dir, 'store');
  mkdirSync(join(root, 'layers'), { recursive: true });
  const before = tree(dir);
  const err = await install(path, root, opts.limits).then(
    () => null,
    (e: unknown) => e,
  );
  tt.ok(isSmError(err, 'INVALID_IMAGE'), `rejected with INVALID_IMAGE (got ${String((err as Error | null)?.message ?? 'success')})`);
  tt.match((err as Error | null)?.message ?? '', reason, 'the reason names the problem');
  tt.same(tree(dir), before, 'nothing new exists, the staging area is gone');
  return err as Error;
}

/** Archive path of the blob holding `data`. */
function layerBlobOf(_files: Files, data: Buffer) {
  return blobPath(sha256(data));
}

const file = (path: string, data = 'x', mode = 0o644) => ({ path, data, mode });

t.test('path traversal (..)', async (t) => {
  const err = await rejects(t, [{ entries: [file('ok'), file('../../escaped.txt')] }], /path traversal.*\.\.\/\.\.\/escaped\.txt/);
  t.same((err as { details?: { entry?: string } }).details?.entry, '../../escaped.txt');
});

t.test('path traversal hidden in the middle of a path', async (t) => {
  await rejects(t, [{ entries: [file('a/../../../escaped.txt')] }], /path traversal/);
});

t.test('absolute path', async (t) => {
  const target = `/tmp/smd-abs-${randomBytes(4).toString('hex')}`;
  await rejects(t, [{ entries: [file(`${target}/evil`)] }], /absolute path.*smd-abs-/);
  t.notOk(existsSync(target));
});

t.test('symlink pointing out of the layer', async (t) => {
  await rejects(t, [{ entries: [{ path: 'link', type: 'symlink', linkpath: '../../../outside' }] }], /symlink points outside the layer.*link/);
});

t.test('symlink chain pointing out through another symlink', async (t) => {
  // a/b/s → ../../t is inside; a/b/x → s/../../.. is lexically inside but physically outside.
  await rejects(
    t,
    [
      {
        entries: [
          { path: 'a/b/s', type: 'symlink', linkpath: '../../t' },
          { path: 'a/b/x', type: 'symlink', linkpath: 's/../../..' },
        ],
      },
    ],
    /through other symlinks.*a\/b\/x/,
  );
});

t.test('a file written through a symlink created earlier (absolute target)', async (t) => {
  const target = `/tmp/smd-target-${randomBytes(4).toString('hex')}`;
  mkdirSync(target);
  t.teardown(() => statSync(target) && import('node:fs').then((fs) => fs.rmSync(target, { recursive: true, force: true })));
  await rejects(t, [{ entries: [{ path: 'evil', type: 'symlink', linkpath: target }, file('evil/pwned')] }], /written through symlink evil: evil\/pwned/);
  t.notOk(existsSync(join(target, 'pwned')), 'nothing written at the symlink target');
});

t.test('a file written through a symlink created earlier (relative target)', async (t) => {
  await rejects(t, [{ entries: [{ path: 'real/', type: 'dir' }, { path: 'sub', type: 'symlink', linkpath: 'real' }, file('sub/f')] }], /written through symlink sub/);
});

t.test('a directory created through a symlink', async (t) => {
  await rejects(t, [{ entries: [{ path: 'sub', type: 'symlink', linkpath: '/etc' }, { path: 'sub/x/', type: 'dir' }] }], /written through symlink sub/);
});

t.test('hard link to a file outside (..)', async (t) => {
  await rejects(t, [{ entries: [{ path: 'h', type: 'hardlink', linkpath: '../../../etc/passwd' }] }], /hard link h .*path traversal/);
});

t.test('hard link to a file outside (absolute)', async (t) => {
  await rejects(t, [{ entries: [{ path: 'h', type: 'hardlink', linkpath: '/etc/passwd' }] }], /hard link h .*absolute path/);
});

t.test('hard link to a path that is not in the layer', async (t) => {
  await rejects(t, [{ entries: [{ path: 'h', type: 'hardlink', linkpath: 'etc/passwd' }] }], /hard link h points outside the layer/);
});

t.test('hard link through a symlink', async (t) => {
  await rejects(t, [{ entries: [{ path: 'etc', type: 'symlink', linkpath: '/etc' }, { path: 'h', type: 'hardlink', linkpath: 'etc/passwd' }] }], /hard link h points outside/);
});

t.test('character device node', async (t) => {
  await rejects(t, [{ entries: [{ path: 'dev/', type: 'dir' }, { path: 'dev/mem', type: 'char', devmajor: 1, devminor: 1 }] }], /device node not allowed: dev\/mem/);
});

t.test('block device node', async (t) => {
  await rejects(t, [{ entries: [{ path: 'sda', type: 'block', devmajor: 8, devminor: 0 }] }], /device node not allowed: sda/);
});

t.test('FIFO', async (t) => {
  await rejects(t, [{ entries: [{ path: 'pipe', type: 'fifo' }] }], /FIFO not allowed: pipe/);
});

t.test('unsupported entry type (GNU sparse)', async (t) => {
  await rejects(t, [{ entries: [{ path: 'sparse', type: 'S', data: 'x' }] }], /unsupported tar entry type.*sparse/);
});

t.test('blob whose digest does not match (layer)', async (t) => {
  const tarred = tarBuffer([file('f', 'original')]);
  const forged = Buffer.from(tarred);
  forged[512] = 'O'.charCodeAt(0); // same size, other content
  await rejects(t, [{ data: tarred, mediaType: MT.layerTar }], /blob sha256:[a-f0-9]{64} digest mismatch/, {
    edit: (files) => replaceFile(files, layerBlobOf(files, tarred), forged),
  });
});

t.test('blob whose digest does not match (config)', async (t) => {
  await rejects(t, [{ entries: [file('f')] }], /image config.*digest mismatch/, {
    edit: (files) => {
      const idx = JSON.parse(files.find((f) => f.path === 'index.json')!.data.toString());
      const manifest = JSON.parse(files.find((f) => f.path === blobPath(idx.manifests[0].digest))!.data.toString());
      const cfg = files.find((f) => f.path === blobPath(manifest.config.digest))!;
      const forged = Buffer.from(cfg.data.toString().replace('"os":"linux"', '"os":"LINUX"'));
      return replaceFile(files, cfg.path, forged);
    },
  });
});

t.test('blob whose size does not match its descriptor', async (t) => {
  const layer = gzip(tarBuffer([file('f', 'content')]));
  await rejects(t, [{ data: layer, mediaType: MT.layerTarGzip }], /size mismatch: descriptor says \d+ bytes, archive holds \d+/, {
    edit: (files) => replaceFile(files, layerBlobOf(files, layer), Buffer.concat([layer, Buffer.from('extra')])),
  });
});

t.test('truncated gzip', async (t) => {
  const whole = gzip(tarBuffer([file('f', randomBytes(64 * 1024).toString('hex'))]));
  const truncated = whole.subarray(0, whole.length - 200);
  // descriptor digest and size describe the truncated blob: only gunzip can notice.
  await rejects(t, [{ data: truncated, mediaType: MT.layerTarGzip }], /gzip stream is damaged or truncated/);
});

t.test('gzip declared but the blob is not gzip', async (t) => {
  await rejects(t, [{ data: tarBuffer([file('f')]), mediaType: MT.layerTarGzip }], /gzip stream is damaged/);
});

t.test('uncompressed declared but the blob is gzip', async (t) => {
  await rejects(t, [{ data: gzip(tarBuffer([file('f')])), mediaType: MT.layerTar }], /says uncompressed but the blob is gzip/);
});

t.test('gzip bomb beyond the unpacked cap (one big file)', async (t) => {
  const bomb = gzip(tarBuffer([{ path: 'zeros', data: Buffer.alloc(32 * 1024 * 1024) }]));
  t.ok(bomb.length < 1024 * 1024, `bomb is small (${bomb.length} bytes)`);
  await rejects(t, [{ data: bomb, mediaType: MT.layerTarGzip }], /unpacked size exceeds maxUnpackedBytes=8388608 \(at zeros, 33554432 bytes/, { limits: { maxUnpackedBytes: 8 * 1024 * 1024 } });
});

t.test('gzip bomb beyond the unpacked cap (padding after the end of the tar)', async (t) => {
  const bomb = gzip(Buffer.concat([tarBuffer([file('f')]), Buffer.alloc(32 * 1024 * 1024)]));
  await rejects(t, [{ data: bomb, mediaType: MT.layerTarGzip }], /unpacked size exceeds maxUnpackedBytes=8388608/, { limits: { maxUnpackedBytes: 8 * 1024 * 1024 } });
});

t.test('more entries than the cap', async (t) => {
  const entries = Array.from({ length: 50 }, (_, i) => file(`f${i}`));
  await rejects(t, [{ entries }], /more than maxEntries=20 entries/, { limits: { maxEntries: 20 } });
});

t.test('archive bigger than the archive cap', async (t) => {
  await rejects(t, [{ entries: [file('f', randomBytes(100_000).toString('hex'))] }], /over the cap maxArchiveBytes=50000/, { limits: { maxArchiveBytes: 50_000 } });
});

t.test('missing blob', async (t) => {
  const layer = gzip(tarBuffer([file('f')]));
  await rejects(t, [{ data: layer, mediaType: MT.layerTarGzip }], /missing blob sha256:[a-f0-9]{64} \(layer 0\)/, {
    edit: (files) => files.filter((f) => f.path !== layerBlobOf(files, layer)),
  });
});

t.test('index.json that is not JSON', async (t) => {
  await rejects(t, [{ entries: [file('f')] }], /index\.json is not valid JSON/, {
    edit: (files) => replaceFile(files, 'index.json', Buffer.from('{"schemaVersion": 2, "manifests": [')),
  });
});

t.test('index.json that is JSON of the wrong shape', async (t) => {
  await rejects(t, [{ entries: [file('f')] }], /index\.json is not a valid document: manifests/, {
    edit: (files) => replaceFile(files, 'index.json', Buffer.from('{"schemaVersion": 2, "manifests": "nope"}')),
  });
});

t.test('missing oci-layout, and an unsupported layout version', async (t) => {
  await rejects(t, [{ entries: [file('f')] }], /oci-layout is missing/, { edit: (files) => files.filter((f) => f.path !== 'oci-layout') });
  await rejects(t, [{ entries: [file('f')] }], /unsupported imageLayoutVersion "2\.0\.0"/, {
    edit: (files) => replaceFile(files, 'oci-layout', Buffer.from('{"imageLayoutVersion":"2.0.0"}')),
  });
});

t.test('unsupported layer media type', async (t) => {
  // zstd is understood since issue #14 (see zstd.test.ts); bzip2 is a media type no tool writes.
  await rejects(t, [{ data: Buffer.from('BZh91AY&SY'), mediaType: 'application/vnd.oci.image.layer.v1.tar+bzip2' }], /unsupported layer media type "application\/vnd\.oci\.image\.layer\.v1\.tar\+bzip2"/);
});

t.test('two entries with the same path of different types', async (t) => {
  await rejects(t, [{ entries: [file('x'), { path: 'x/', type: 'dir' }] }], /two entries for x with different types \(file then dir\)/);
  await rejects(t, [{ entries: [{ path: 'x/', type: 'dir' }, { path: 'x', type: 'symlink', linkpath: 'y' }] }], /two entries for x with different types \(dir then symlink\)/);
  await rejects(t, [{ entries: [{ path: 'd/f', data: 'x' }, file('d')] }], /two entries for d with different types/);
});

t.test('a file below a file', async (t) => {
  await rejects(t, [{ entries: [file('f'), file('f/g')] }], /parent f is not a directory: f\/g/);
});

t.test('corrupt tar header (bad checksum) in a layer', async (t) => {
  await rejects(t, [{ entries: [file('ok'), { path: 'bad', data: 'x', badChecksum: true }] }], /layer sha256:[a-f0-9]{64} is not a valid tar archive: checksum failure/);
});

t.test('a layer that is not a tar at all', async (t) => {
  await rejects(t, [{ data: gzip(randomBytes(4096)), mediaType: MT.layerTarGzip }], /is not a valid tar archive/);
});

t.test('the outer archive is not a tar', async (t) => {
  const dir = tempDir(t);
  const p = join(dir, 'junk.tar');
  (await import('node:fs')).writeFileSync(p, randomBytes(10_000));
  const err = await install(p, join(dir, 'store')).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(isSmError(err, 'INVALID_IMAGE'));
  t.match((err as Error).message, /image archive is not a valid tar archive/);
});

t.test('the second of two layers fails: the first is not left behind either', async (t) => {
  await rejects(t, [{ entries: [file('good', 'fine')] }, { entries: [file('../bad')] }], /path traversal \(\.\.\): \.\.\/bad/);
});

t.test('setuid and setgid bits are dropped, not rejected (documented policy)', async (t) => {
  const dir = tempDir(t);
  const { path } = buildImage(dir, 'suid.tar', [
    {
      entries: [
        { path: 'bin/', type: 'dir', mode: 0o755 },
        { path: 'bin/su', data: 'binary', mode: 0o4755 },
        { path: 'bin/wall', data: 'binary', mode: 0o2755 },
        { path: 'shared/', type: 'dir', mode: 0o2775 },
        { path: 'tmp/', type: 'dir', mode: 0o1777 },
        { path: 'owned', data: 'x', mode: 0o600, uid: 1234, gid: 5678 },
      ],
    },
  ]);
  const root = join(dir, 'store');
  const { result } = await install(path, root);
  const layer = result.extracted[0]!.path;
  t.equal(statSync(join(layer, 'bin/su')).mode & 0o7777, 0o755, 'setuid dropped');
  t.equal(statSync(join(layer, 'bin/wall')).mode & 0o7777, 0o755, 'setgid dropped');
  t.equal(statSync(join(layer, 'shared')).mode & 0o7777, 0o775, 'setgid dropped on a directory');
  t.equal(statSync(join(layer, 'tmp')).mode & 0o7777, 0o1777, 'sticky bit kept on a directory');
  const st = statSync(join(layer, 'owned'));
  t.same([st.uid, st.gid], [process.getuid!(), process.getgid!()], 'archive owners are not kept');
});
