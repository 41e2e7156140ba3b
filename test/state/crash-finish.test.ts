/**
 * kill -9 of smd after a desired-state apply's commit: removal and clean-up are finished; a
 * crash during a rollback is rolled back in full (see test/helpers/state-crash.ts).
 */
import t from 'tap';
import { NEW, crashSteps } from '../helpers/state-crash.js';

t.test('crash points of a desired-state apply: removal, clean-up, rollback', async (t) => {
  await crashSteps(
    t,
    [
      ['remove', NEW],
      ['cleanup', NEW],
    ],
    { rollback: true },
  );
});
