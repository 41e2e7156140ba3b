/**
 * kill -9 of smd at the later steps of a desired-state apply: a fresh install in flight and the
 * commit roll back (see test/helpers/state-crash.ts). The steps after the commit are in
 * crash-finish.test.ts: one file each keeps both well inside tap's per-file timeout on CI.
 */
import t from 'tap';
import { OLD, crashSteps } from '../helpers/state-crash.js';

t.test('crash points of a desired-state apply: fresh install, commit', async (t) => {
  await crashSteps(t, [
    ['fresh-layers', OLD],
    ['fresh-prepare', OLD],
    ['fresh-start', OLD],
    ['commit', OLD],
  ]);
});
