/** users.set rules on a fake systemd and a fake host (no root). */
import t from 'tap';
import { SmError } from '../../src/errors.js';
import { canonicalUsers, usersKey } from '../../src/services/layout.js';
import { fakeServices } from '../helpers/services-fakes.js';

const A = ['driver-a'];
const B = ['driver-b'];

t.test('fault 5: a failed stop keeps the mounts and is not counted stopped; a failed release does not leave the switch half done', async (t) => {
  const f = fakeServices(t);
  await f.operations.wait(f.services.setUsers(A).id, 5_000);
  t.equal((await f.install({ image: f.images['writer-v1']!, settings: { storageLimit: 1 << 20 } })).state, 'succeeded');
  t.equal((await f.install({ image: f.images['hello-http-v1']!, settings: { storageLimit: 1 << 20 } })).state, 'succeeded');
  f.systemd.onStop = (name) => {
    if (name === 'smd-writer.service') throw new SmError('SYSTEMD', 'stop job failed', { jobResult: 'failed' });
  };
  const helloData = f.services.layout.dataDirOf(usersKey(canonicalUsers(A)), 'hello-http');
  f.host.fail = (method, dir) => (method === 'releaseQuota' && dir === helloData ? new Error('umount: target is busy') : undefined);
  const op = await f.operations.wait(f.services.setUsers(B).id, 5_000);
  t.equal(op.state, 'succeeded', JSON.stringify(op.error));
  const result = op.result as { stopped: string[]; failed: { id: string }[] };
  t.same(result.stopped, ['hello-http'], 'only the service whose unit stopped');
  t.same(result.failed.map((e) => e.id).sort(), ['hello-http', 'writer']);
  t.ok(f.host.mounts.has(f.services.layout.rootDir('writer')), "the running writer's root stays mounted");
  t.same(JSON.parse(f.services.currentUsers()), B, 'the switch is done');
});

t.test('fault 6: an install during users.set attaches to the users whose storage it gets', async (t) => {
  const f = fakeServices(t);
  await f.operations.wait(f.services.setUsers(A).id, 5_000);
  t.equal((await f.install({ image: f.images['hello-http-v1']! })).state, 'succeeded');
  // The switch stops hello-http slowly; a writer install arrives meanwhile.
  let releaseStop!: () => void;
  const stopHeld = new Promise<void>((r) => (releaseStop = r));
  f.systemd.onStop = (name) => (name === 'smd-hello-http.service' ? stopHeld : undefined);
  const switched = f.operations.wait(f.services.setUsers(B).id, 5_000);
  let switchDone = false;
  void switched.then(() => (switchDone = true));
  // The install's own account creation waits until the switch is over.
  f.host.fail = async (method, uid) => {
    if (method === 'ensureAccount' && uid !== f.services.get('hello-http').uid) await switched;
    return undefined;
  };
  const installOp = f.services.install({ image: f.images['writer-v1']! });
  // Once the install named its target (its image is read), let the switch go on.
  await new Promise<void>((resolve) => {
    const off = f.bus.subscribe('operation', (e) => {
      if (e.id === installOp.id && e.target === 'writer') (off(), setImmediate(resolve));
    });
  });
  releaseStop();
  const installed = await f.operations.wait(installOp.id, 5_000);
  await switched;
  t.ok(switchDone);
  t.equal(installed.state, 'succeeded', JSON.stringify(installed.error));
  const keyA = usersKey(canonicalUsers(A));
  const keyB = usersKey(canonicalUsers(B));
  const storage = [...f.host.storage.keys()].filter((d) => d.includes('/writer/'));
  const attachedB = f.services.attachedTo(canonicalUsers(B)).has('writer');
  const attachedA = f.services.attachedTo(canonicalUsers(A)).has('writer');
  t.ok(storage.every((d) => (d.includes(keyB) ? attachedB : d.includes(keyA) ? attachedA : false)), `storage ${JSON.stringify(storage)} belongs to the users it is attached to (A ${attachedA}, B ${attachedB})`);
  t.ok(f.services.get('writer').state !== 1 || attachedB, 'it runs only if the current users use it');
});
