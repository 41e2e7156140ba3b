import t from 'tap';
import { missingPrograms, PROGRAMS, programsCheck } from '../../src/system/programs.js';

const all = new Set(PROGRAMS.flatMap((n) => n.programs).concat('setfattr'));

t.test('every program present: ok', async (t) => {
  t.same(missingPrograms((p) => all.has(p)), []);
  t.match(programsCheck((p) => all.has(p)), { ok: true });
});

t.test('a missing program is named with its package and what needs it', async (t) => {
  const without = (gone: string[]) => (p: string) => all.has(p) && !gone.includes(p);
  t.same(missingPrograms(without(['mkfs.ext4'])), [{ program: 'mkfs.ext4', package: 'e2fsprogs', for: 'storage quotas' }]);
  const check = programsCheck(without(['mkfs.ext4', 'tc']));
  t.equal(check.ok, false);
  t.match(check.detail, /missing: tc \(bandwidth shaping\), mkfs\.ext4 \(storage quotas\); install with: apt-get install iproute2 e2fsprogs/);
});

t.test('opaque directories need setfattr or python3, either will do', async (t) => {
  const base = (p: string) => all.has(p) && p !== 'setfattr';
  t.same(missingPrograms((p) => base(p) || p === 'python3'), [], 'python3 alone is enough');
  t.same(missingPrograms(base), [{ program: 'setfattr or python3', package: 'attr', for: 'opaque directories in layers' }]);
});
