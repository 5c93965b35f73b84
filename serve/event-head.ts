/**
 * The newest event id, polled once for every stream client: a caught-up client waits here
 * instead of querying the log itself, so that N idle clients cost one query per poll.
 */
import type pg from 'pg';
import * as metrics from './metrics.ts';

export class EventHead {
  readonly #pool: pg.Pool;
  readonly #pollMs: number;
  #latest = 0;
  #timer: NodeJS.Timeout | undefined;
  #polling = false;
  readonly #waiters = new Set<() => void>();
  // Positions clients reported since the last poll, for the lag gauge.
  #lowest = Infinity;

  constructor(pool: pg.Pool, pollMs: number) {
    this.#pool = pool;
    this.#pollMs = pollMs;
  }

  get latest(): number {
    return this.#latest;
  }

  report(position: number): void {
    if (position < this.#lowest) this.#lowest = position;
  }

  /** Resolves once the log holds an event past `position`, or `open()` turns false. */
  async waitPast(position: number, open: () => boolean): Promise<void> {
    if (this.#latest > position) return;
    this.#ensurePolling();
    await new Promise<void>((resolve) => {
      const check = () => {
        if (this.#latest > position || !open()) {
          this.#waiters.delete(check);
          resolve();
        }
      };
      this.#waiters.add(check);
      // Re-checked on every poll; a closed socket is noticed within one poll.
    });
  }

  #ensurePolling(): void {
    if (this.#timer) return;
    void this.#poll();
    this.#timer = setInterval(() => void this.#poll(), this.#pollMs);
    this.#timer.unref();
  }

  async #poll(): Promise<void> {
    if (this.#polling) return;
    this.#polling = true;
    try {
      const { rows } = await this.#pool.query<{ id: string | null }>('SELECT max(id) AS id FROM events');
      this.#latest = Number(rows[0]?.id ?? 0);
      metrics.streamLag.set(Number.isFinite(this.#lowest) ? Math.max(0, this.#latest - this.#lowest) : 0);
      this.#lowest = Infinity;
    } catch {
      // the next poll tries again
    } finally {
      this.#polling = false;
    }
    for (const w of [...this.#waiters]) w();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    for (const w of [...this.#waiters]) w();
  }
}
