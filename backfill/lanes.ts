/**
 * The lanes (repos fetched and verified at once) of one worker process's bulk backfill, shared by
 * every page it runs, the oldest page first (by the key its caller gives: the bulk activity's is
 * its workflow's scheduling order). With the next page's activity already started
 * (`pagesInFlight` 2), its lanes take over one by one as the current page runs out of DIDs, and
 * its repos are fetched and verified while the current page's last batches are still being
 * stored and its result travels through Temporal: the worker no longer idles at each page's end.
 * Each page still waits for its own repos, so each page's outcomes are its own.
 *
 * A lane is held from repo to repo while its page has DIDs (handing it back between repos
 * would let a waiting newer page take it before the older page's lane asks again), and given up
 * when the lane must wait for something else, or when `olderWaiting`.
 */

/** Where a page stands among the pages of a pool: compared element by element, lower first. */
export type PageKey = readonly number[];

function before(a: PageKey, b: PageKey): boolean {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i]! < b[i]!;
  return a.length < b.length;
}

export class LanePool {
  #busy = 0;
  /** Waiters by page (oldest first), each page's in arrival order. */
  readonly #waiting: Array<{ page: PageKey; limit: number; grant: () => void }> = [];
  #pages = 0;

  /**
   * The key of a new page. `order` says where it stands (the bulk activity passes when its page
   * was scheduled and its activity id, so that pages go in the workflow's order, which settles
   * them in order, not in the order their tasks reached this worker); without it, pages go in
   * the order they came.
   */
  nextPage(order?: readonly number[]): PageKey {
    return [...(order ?? [Date.now(), 0]), this.#pages++];
  }

  get busy(): number {
    return this.#busy;
  }

  /**
   * Resolves with a lane once fewer than `limit` are busy and no older page is waiting; resolves
   * with false (no lane) when `signal` aborts first.
   */
  acquire(page: PageKey, limit: number, signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) return Promise.resolve(false);
    if (this.#busy < limit && !this.#waiting.some((w) => !before(page, w.page))) {
      this.#busy++;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const waiter = {
        page,
        limit,
        grant: () => {
          signal.removeEventListener('abort', onAbort);
          resolve(true);
        },
      };
      const onAbort = () => {
        const at = this.#waiting.indexOf(waiter);
        if (at >= 0) this.#waiting.splice(at, 1);
        resolve(false);
        this.#serve();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      // After the last waiter of its page or an older one: oldest page first, each in arrival order.
      let at = this.#waiting.length;
      while (at > 0 && before(page, this.#waiting[at - 1]!.page)) at--;
      this.#waiting.splice(at, 0, waiter);
    });
  }

  /** Whether a page numbered before `page` waits for a lane: then a lane of `page` should give its up. */
  olderWaiting(page: PageKey): boolean {
    return this.#waiting.length > 0 && before(this.#waiting[0]!.page, page);
  }

  release(): void {
    this.#busy--;
    this.#serve();
  }

  #serve(): void {
    while (this.#waiting.length > 0 && this.#busy < this.#waiting[0]!.limit) {
      this.#busy++;
      this.#waiting.shift()!.grant();
    }
  }
}
