/** kill -9 of smd at the steps of a desired-state apply before its services change (see test/helpers/state-crash.ts). */
import t from 'tap';
import { OLD, crashSteps } from '../helpers/state-crash.js';

t.test('crash points of a desired-state apply: resolving, fetching, layers, the first update', async (t) => {
  await crashSteps(t, [
    ['resolve', OLD],
    ['fetch', OLD],
    ['layers', OLD],
    ['hello-http-stop-previous', OLD],
    ['hello-http-start', OLD],
  ]);
});
