// Pure rules of the image code: entry path normalisation, symlink targets, whiteout names,
// manifest choice.
import t from 'tap';
import { ancestors, checkSymlinkTarget, classifyWhiteout, normalizeEntryPath, sha256Hex } from '../../src/images/paths.js';
import { chooseManifest } from '../../src/images/documents.js';

t.test('normalizeEntryPath', async (t) => {
  t.same(normalizeEntryPath('./a/b/'), { ok: true, path: 'a/b' });
  t.same(normalizeEntryPath('a//./b'), { ok: true, path: 'a/b' });
  t.same(normalizeEntryPath('./'), { ok: true, path: '' });
  t.same(normalizeEntryPath('..foo/bar..'), { ok: true, path: '..foo/bar..' });
  t.match(normalizeEntryPath('../x'), { ok: false, reason: /traversal/ });
  t.match(normalizeEntryPath('a/../b'), { ok: false, reason: /traversal/ });
  t.match(normalizeEntryPath('/etc/passwd'), { ok: false, reason: /absolute/ });
  t.match(normalizeEntryPath('a\0b'), { ok: false, reason: /NUL/ });
});

t.test('checkSymlinkTarget', async (t) => {
  t.same(checkSymlinkTarget('bin/sh', 'busybox'), { ok: true, path: 'bin/busybox' });
  t.same(checkSymlinkTarget('a/b/l', '../../c'), { ok: true, path: 'c' });
  t.same(checkSymlinkTarget('a/l', '..'), { ok: true, path: '' });
  t.match(checkSymlinkTarget('a/l', '../..'), { ok: false, reason: /outside/ });
  t.match(checkSymlinkTarget('l', '../etc/passwd'), { ok: false, reason: /outside/ });
  t.same(checkSymlinkTarget('usr/bin/env', '/bin/busybox'), { ok: true, path: 'bin/busybox' }, 'absolute = container root');
  t.same(checkSymlinkTarget('l', '/../../etc'), { ok: true, path: 'etc' });
  t.match(checkSymlinkTarget('l', ''), { ok: false, reason: /empty/ });
});

t.test('classifyWhiteout', async (t) => {
  t.same(classifyWhiteout('a/b'), { kind: 'none' });
  t.same(classifyWhiteout('a/.wh.b'), { kind: 'whiteout', target: 'a/b' });
  t.same(classifyWhiteout('.wh.b'), { kind: 'whiteout', target: 'b' });
  t.same(classifyWhiteout('a/.wh..wh..opq'), { kind: 'opaque', dir: 'a' });
  t.same(classifyWhiteout('.wh..wh..opq'), { kind: 'opaque', dir: '' });
  t.same(classifyWhiteout('.wh..wh.plnk'), { kind: 'meta' });
  t.same(classifyWhiteout('a/.wh.'), { kind: 'meta' });
  t.same(classifyWhiteout('a/x.wh.b'), { kind: 'none' });
});

t.test('ancestors and digests', async (t) => {
  t.same(ancestors('a/b/c'), ['a', 'a/b']);
  t.same(ancestors('a'), []);
  t.equal(sha256Hex('sha256:' + 'a'.repeat(64)), 'a'.repeat(64));
  t.equal(sha256Hex('sha256:' + 'A'.repeat(64)), null);
  t.equal(sha256Hex('sha512:' + 'a'.repeat(128)), null);
});

t.test('chooseManifest', async (t) => {
  const d = (name: string, platform?: { os: string; architecture: string }, ref?: string) => ({
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    digest: name,
    size: 1,
    ...(platform ? { platform } : {}),
    ...(ref ? { annotations: { 'org.opencontainers.image.ref.name': ref } } : {}),
  });
  const amd = { os: 'linux', architecture: 'amd64' };
  const arm = { os: 'linux', architecture: 'arm64' };
  const list = [d('arm', arm, 'v1'), d('plain'), d('amd', amd, 'v2')];
  t.equal(chooseManifest(list, 'v1', amd)?.digest, 'arm', 'ref wins over platform');
  t.equal(chooseManifest(list, undefined, amd)?.digest, 'amd', 'host platform');
  t.equal(chooseManifest(list, 'missing', arm)?.digest, 'arm');
  t.equal(chooseManifest([d('arm', arm), d('plain')], undefined, amd)?.digest, 'plain', 'no platform before a foreign one');
  t.equal(chooseManifest([d('arm', arm)], undefined, amd)?.digest, 'arm', 'else the first');
  t.equal(chooseManifest([], undefined, amd), undefined);
});
