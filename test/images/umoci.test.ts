// Compatibility with a standard tool: an image built by umoci (init/new/unpack/repack/config/tag),
// packed with GNU tar, reads and extracts; umoci's own deletion whiteout becomes an overlayfs one.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readImage } from '../../src/images/index.js';
import { install, tempDir } from './fixture.js';

const HAVE = existsSync('/usr/bin/umoci') && existsSync('/bin/busybox');

t.test('an image made by umoci', { skip: HAVE ? false : 'needs umoci and busybox-static (apt-get install umoci busybox-static)' }, async (t) => {
  const dir = tempDir(t);
  const L = join(dir, 'layout');
  const umoci = (...args: string[]) => execFileSync('umoci', args, { cwd: dir, encoding: 'utf8' });
  umoci('init', '--layout', L);
  umoci('new', '--image', `${L}:first`);
  const b1 = join(dir, 'bundle1');
  umoci('unpack', '--image', `${L}:first`, b1);
  mkdirSync(join(b1, 'rootfs/bin'), { recursive: true });
  mkdirSync(join(b1, 'rootfs/etc'), { recursive: true });
  cpSync('/bin/busybox', join(b1, 'rootfs/bin/busybox'));
  symlinkSync('busybox', join(b1, 'rootfs/bin/sh'));
  writeFileSync(join(b1, 'rootfs/etc/motd'), 'hello\n');
  writeFileSync(join(b1, 'rootfs/etc/gone'), 'bye\n');
  umoci('repack', '--image', `${L}:first`, b1);
  umoci('config', '--image', `${L}:first`, '--config.entrypoint', '/bin/sh', '--config.cmd=-c', '--config.cmd=echo hi', '--config.env', 'A=1', '--config.workingdir', '/etc');
  umoci('tag', '--image', `${L}:first`, 'second');
  const b2 = join(dir, 'bundle2');
  umoci('unpack', '--image', `${L}:second`, b2);
  rmSync(join(b2, 'rootfs/etc/gone'));
  writeFileSync(join(b2, 'rootfs/etc/new'), 'new\n');
  umoci('repack', '--image', `${L}:second`, b2);

  const archive = join(dir, 'umoci.tar');
  execFileSync('tar', ['-C', L, '-cf', archive, '.']);
  const gzArchive = join(dir, 'umoci.tar.gz');
  execFileSync('tar', ['-C', L, '-czf', gzArchive, '.']);

  const first = await readImage(archive, { ref: 'first' });
  t.equal(first.layers.length, 1);
  t.same(first.config.entrypoint, ['/bin/sh']);
  t.same(first.config.cmd, ['-c', 'echo hi']);
  t.ok(first.config.env.includes('A=1'));
  t.equal(first.config.workingDir, '/etc');
  t.equal(first.refName, 'first');

  const second = await readImage(gzArchive, { ref: 'second' });
  t.equal(second.blobs.kind === 'archive' && second.blobs.gzip, true);
  t.equal(second.layers.length, 2);
  t.equal(second.layers[0]!.digest, first.layers[0]!.digest, 'the tag shares the first layer');

  const root = join(dir, 'store');
  const { result } = await install(gzArchive, root, undefined, 'second');
  t.equal(result.extracted.length, 2);
  const [l1, l2] = second.layers.map((l) => join(root, 'layers', l.digest.slice(7)));
  t.same(readFileSync(join(l1!, 'bin/busybox')), readFileSync('/bin/busybox'));
  t.equal(readlinkSync(join(l1!, 'bin/sh')), 'busybox');
  t.equal(readFileSync(join(l1!, 'etc/motd'), 'utf8'), 'hello\n');
  const wh = lstatSync(join(l2!, 'etc/gone'));
  t.ok(wh.isCharacterDevice() && wh.rdev === 0, "umoci's .wh.gone became an overlayfs whiteout");
  t.equal(readFileSync(join(l2!, 'etc/new'), 'utf8'), 'new\n');

  // Reading the first tag afterwards: its layer is already present.
  const again = await install(archive, root, undefined, 'first');
  t.same(again.result.present, [first.layers[0]!.digest]);
  t.same(again.result.extracted, []);
});
