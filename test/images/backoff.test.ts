/** The downloads' retry wait: exponential growth, capped, fully jittered below the ceiling. */
import t from 'tap';
import { backoffDelay } from '../../src/images/net/download.js';

const policy = { initialMs: 500, maxMs: 30_000 };

t.test('each wait is below its ceiling, which doubles up to maxMs', async (t) => {
  const ceilings = [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000];
  for (const [i, ceiling] of ceilings.entries()) {
    const waits = Array.from({ length: 200 }, () => backoffDelay(i + 1, policy));
    t.ok(waits.every((w) => w >= 0 && w < ceiling), `attempt ${i + 1}: all waits in [0, ${ceiling})`);
    // Full jitter: the waits spread over the range rather than sitting at its top.
    t.ok(Math.min(...waits) < ceiling / 4 && Math.max(...waits) > (ceiling * 3) / 4, `attempt ${i + 1}: spread over the range`);
  }
});
