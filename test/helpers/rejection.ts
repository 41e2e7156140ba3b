import type { SmError } from '../../src/errors.js';

/** The error `p` rejects with; throws when it resolves. */
export async function rejection(p: Promise<unknown>): Promise<SmError> {
  try {
    await p;
  } catch (err) {
    return err as SmError;
  }
  throw new Error('expected a rejection');
}
