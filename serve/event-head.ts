/**
 * How far the event log can be sent, polled once for every stream client: the highest id below
 * which every event that will ever commit has (storage/event-horizon.ts), not the newest id, so
 * that an event whose transaction commits after a later one is not passed by. A caught-up
 * client waits here instead of querying the log itself, so that N idle clients cost one query
 * per poll.
 */
import type pg from 'pg';
import { EventHorizon } from '../storage/event-horizon.ts';
import * as metrics from './metrics.ts';

export class EventHead {
  readonly #pool: pg.Pool;
  readonly #pollMs: number;
  readonly #horizon = new EventHorizon();
  #timer: NodeJS.Timeout | undefined;
  #polling = false;
  readonly #waiters = new Set<() => void>();
  // Positions clients reported since the last poll, for the lag gauge.
  #lowest = Infinity;

  constructor(pool: pg.Pool, pollMs: number) {
    this.#pool = pool;
    this.#pollMs = pollMs;
  }

  /** Every event up to this id that will ever be visible is, to a query started from now on. */
  get latest(): number {
    return this.#horizon.final;
  }

  report(position: number): void {
    if (position < this.#lowest) this.#lowest = position;
  }

  /** Resolves once the log holds an event past `position`, or `open()` turns false. */
  async waitPast(position: number, open: () => boolean): Promise<void> {
    if (this.latest > position) return;
    this.#ensurePolling();
    await new Promise<void>((resolve) => {
      const check = () => {
        if (this.latest > position || !open()) {
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
      const latest = await this.#horizon.advance(this.#pool);
      metrics.streamLag.set(Number.isFinite(this.#lowest) ? Math.max(0, latest - this.#lowest) : 0);
      metrics.streamHeld.set(Math.max(0, this.#horizon.allocated - latest));
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
