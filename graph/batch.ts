/**
 * Coalesces lookups that concurrent steps make in the same turn of the event loop into one
 * query: a walk steps hundreds of nodes at once, and one `= ANY($1)` query for all of their
 * blocks costs about what one query for a single block does.
 */

export interface BatcherOptions {
  /** Most keys per call of the loader; more start another batch at once. */
  maxBatch?: number;
  /**
   * At most one batch in flight: keys asked for meanwhile wait and go together when it returns.
   * For queries whose cost hardly depends on the number of keys (a scan), so that batches grow
   * with the query's latency instead of one small query per turn of the event loop.
   */
  serial?: boolean;
}

/**
 * Calls `loadMany(keys)` once per batch; it must return one result per key, in order.
 * A failed batch rejects every load in it.
 */
export class Batcher<K, V> {
  readonly #loadMany: (keys: K[]) => Promise<V[]>;
  readonly #maxBatch: number;
  readonly #serial: boolean;
  #keys: K[] = [];
  #waiters: { resolve: (v: V) => void; reject: (e: unknown) => void }[] = [];
  #scheduled = false;
  #inFlight = new Set<Promise<void>>();

  constructor(loadMany: (keys: K[]) => Promise<V[]>, opts: BatcherOptions = {}) {
    this.#loadMany = loadMany;
    this.#maxBatch = opts.maxBatch ?? 5000;
    this.#serial = opts.serial ?? false;
  }

  load(key: K): Promise<V> {
    return new Promise<V>((resolve, reject) => {
      this.#keys.push(key);
      this.#waiters.push({ resolve, reject });
      if (this.#serial && this.#inFlight.size > 0) return;
      if (this.#keys.length >= this.#maxBatch) this.#dispatch();
      else if (!this.#scheduled) {
        this.#scheduled = true;
        // setImmediate, not a microtask: steps started in this turn all get to ask first.
        setImmediate(() => this.#dispatch());
      }
    });
  }

  /** Sends what is queued now and waits for every batch in flight. */
  async flush(): Promise<void> {
    this.#dispatch();
    while (this.#inFlight.size > 0 || this.#keys.length > 0) {
      await Promise.all([...this.#inFlight]);
      this.#dispatch();
    }
  }

  /** Keys queued and not yet sent. */
  get pending(): number {
    return this.#keys.length;
  }

  #dispatch(): void {
    this.#scheduled = false;
    if (this.#keys.length === 0) return;
    if (this.#serial && this.#inFlight.size > 0) return;
    const keys = this.#keys.slice(0, this.#maxBatch);
    const waiters = this.#waiters.slice(0, this.#maxBatch);
    this.#keys = this.#keys.slice(keys.length);
    this.#waiters = this.#waiters.slice(waiters.length);
    const run = this.#loadMany(keys).then(
      (values) => {
        if (values.length !== keys.length) throw new Error(`batch loader returned ${values.length} results for ${keys.length} keys`);
        for (let i = 0; i < waiters.length; i++) waiters[i]!.resolve(values[i]!);
      },
    ).catch((err: unknown) => {
      for (const w of waiters) w.reject(err);
    }).finally(() => {
      this.#inFlight.delete(run);
      // What queued up behind a serial batch (or past maxBatch) goes now.
      if (this.#keys.length > 0) this.#dispatch();
    });
    this.#inFlight.add(run);
  }
}
