/**
 * The one per-key lock of smd: actions on one key run in order of arrival. `run` is exclusive;
 * `shared` runs beside other shared holders of the key but never beside an exclusive one (e.g.
 * every service action holds `users` shared, the users switch holds it exclusively).
 */
export class KeyedLock {
  private readonly slots = new Map<string, { tail: Promise<unknown>; readers: Promise<unknown>[]; pending: number }>();

  /** Whether anything holds or waits for `key`. */
  busy(key: string): boolean {
    return this.slots.has(key);
  }

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const fresh = !this.slots.has(key);
    const slot = this.slot(key);
    const before = slot.readers.length > 0 ? Promise.all([slot.tail, ...slot.readers]) : slot.tail;
    // A free key starts at once (synchronously, as a plain call would).
    const result = fresh ? now(fn) : before.then(fn, fn);
    slot.tail = result.catch(() => {});
    slot.readers = [];
    return this.track(key, slot, result);
  }

  shared<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const fresh = !this.slots.has(key);
    const slot = this.slot(key);
    const result = fresh ? now(fn) : slot.tail.then(fn, fn);
    const held = result.catch(() => {});
    slot.readers.push(held);
    void held.then(() => {
      const i = slot.readers.indexOf(held);
      if (i >= 0) slot.readers.splice(i, 1);
    });
    return this.track(key, slot, result);
  }

  private slot(key: string) {
    let slot = this.slots.get(key);
    if (!slot) {
      slot = { tail: Promise.resolve(), readers: [], pending: 0 };
      this.slots.set(key, slot);
    }
    slot.pending++;
    return slot;
  }

  private track<T>(key: string, slot: { pending: number }, result: Promise<T>): Promise<T> {
    void result
      .catch(() => {})
      .then(() => {
        if (--slot.pending === 0 && this.slots.get(key) === slot) this.slots.delete(key);
      });
    return result;
  }
}

function now<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return fn();
  } catch (err) {
    return Promise.reject(err);
  }
}
