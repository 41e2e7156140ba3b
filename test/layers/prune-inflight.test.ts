/** A prune keeps the previous layers of an update still in flight: a crash may roll it back to them. */
import t from 'tap';
import { mkdirSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../../src/db/database.js';
import { LayerStore } from '../../src/layers/store.js';
import { silentLogger } from '../../src/log.js';

const OLD = 'sha256:' + 'a'.repeat(64);
const NEW = 'sha256:' + 'b'.repeat(64);

t.test('the previous layers of an uncommitted update survive a prune; once committed they go', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'smd-prune-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const opened = openDatabase(join(dir, 'smd.db'));
  t.teardown(() => opened.close());
  const store = new LayerStore(opened.db, dir, { maxArchiveBytes: 1 << 20, maxUnpackedBytes: 1 << 20, maxEntries: 100 }, silentLogger);
  const sql = opened.sqlite;
  for (const d of [OLD, NEW]) {
    sql.prepare('INSERT INTO layers (digest, size) VALUES (?, 1)').run(d);
    mkdirSync(store.dirFor(d), { recursive: true });
  }
  // The row is already switched to the new layers; the update has not proven itself yet.
  sql.prepare("INSERT INTO services (id, version, layerList) VALUES ('web', 2, ?)").run(JSON.stringify([NEW]));
  const inputs = { id: 'web', version: 2, mode: 'update', previous: { id: 'web', version: 1, layerList: JSON.stringify([OLD]) } };
  sql.prepare("INSERT INTO operations (id, kind, state, inputs, createdAt, updatedAt) VALUES ('op', 'services.install', 'running', ?, 0, 0)").run(JSON.stringify(inputs));

  t.same((await store.prune()).removed, [], 'a prune by another operation keeps the layers a rollback needs');
  t.ok(existsSync(store.dirFor(OLD)));

  sql.prepare("UPDATE operations SET inputs = ? WHERE id = 'op'").run(JSON.stringify({ ...inputs, committed: true }));
  t.same((await store.prune()).removed, [OLD], 'once the update is committed the old layer goes');
  t.notOk(existsSync(store.dirFor(OLD)));
  t.ok(existsSync(store.dirFor(NEW)));
});
