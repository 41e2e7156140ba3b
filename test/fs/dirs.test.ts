import t from 'tap';
import { mkdirSync, statSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { ensureOwnedDir } from '../../src/fs/dirs.js';

const owner = { uid: 4242, gid: 4243 };

t.test('creates a missing directory and its parents with owner and mode', async (t) => {
  const dir = join(t.testdir(), 'a/b/c');
  await ensureOwnedDir(dir, owner, 0o700);
  const st = statSync(dir);
  t.ok(st.isDirectory());
  t.equal(st.uid, owner.uid);
  t.equal(st.gid, owner.gid);
  t.equal(st.mode & 0o7777, 0o700);
});

t.test('fixes owner and mode of an existing directory', async (t) => {
  const dir = join(t.testdir(), 'd');
  mkdirSync(dir, { mode: 0o755 });
  chmodSync(dir, 0o755);
  await ensureOwnedDir(dir, owner, 0o700);
  const st = statSync(dir);
  t.same([st.uid, st.gid, st.mode & 0o7777], [owner.uid, owner.gid, 0o700]);
});

t.test('changes nothing when the directory is already right', async (t) => {
  const dir = join(t.testdir(), 'e');
  await ensureOwnedDir(dir, owner, 0o700);
  const before = statSync(dir, { bigint: true }).ctimeNs;
  await new Promise((r) => setTimeout(r, 20)); // a chown/chmod now would move ctime by at least this
  await ensureOwnedDir(dir, owner, 0o700);
  t.equal(statSync(dir, { bigint: true }).ctimeNs, before, 'no chown or chmod happened (ctime unchanged)');
});

t.test('a file in the way is an error, not a directory', async (t) => {
  const dir = t.testdir({ f: 'x' });
  await t.rejects(ensureOwnedDir(join(dir, 'f'), owner, 0o700));
});
