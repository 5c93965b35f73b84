/**
 * Per-host politeness: at most `concurrency` requests in flight to a host, at least
 * `minIntervalMs` between two request starts to it, and a cool-down after a 429 during which
 * nobody starts a request to that host. Waiters are served first in, first out.
 *
 * A PDS serves thousands of repos; without this, a bulk backfill would open as many
 * connections to one host as it has repos in flight, and keep hammering it after it said 429.
 *
 * Alone, the limits hold per process. Given a `SharedHostLimits` (a store every worker
 * process and host reaches: storage/db/pds-politeness.ts keeps it in PostgreSQL), they hold for
 * the whole fleet: each request then also takes a lease on one of the host's slots there, the
 * pacing is kept there, and a 429 any worker sees cools the host down for all of them. The
 * process-local gate stays in front, so a process never asks the store for more slots than the
 * host has, and its waiters keep their FIFO order.
 */
import { RateLimitedError } from './errors.ts';

export interface PolitenessOptions {
  /** Requests in flight per host. Default 4. */
  concurrency: number;
  /** Minimum time between two request starts to the same host. Default 0. */
  minIntervalMs: number;
  /** Cool-down after a 429 that named no usable delay. Default 30 s. */
  defaultCoolDownMs: number;
  /** Longest cool-down honoured, so one hostile header cannot park a host for days. Default 1 h. */
  maxCoolDownMs: number;
  /**
   * Longest a caller waits out a cool-down. Past it, `acquire` rejects at once with
   * RateLimitedError (and queued waiters are rejected when a longer cool-down starts), so the
   * repo goes to resync instead of holding a worker slot. Default 60 s.
   */
  maxWaitMs: number;
}

/** One slot to a host held in a shared store; `release` gives it back (and is safe to call twice). */
export interface HostLease {
  release(): Promise<void>;
}

/** What one attempt at a shared slot gave: a lease, or how long to wait before the next attempt. */
export type SharedAttempt =
  | { lease: HostLease }
  /** `waitMs` 0: every slot is taken, try again shortly. `coolingDown`: a 429 cool-down is running. */
  | { lease?: undefined; waitMs: number; coolingDown: boolean };

/**
 * Politeness state every worker shares. Implementations keep time by one clock (the store's),
 * expire the leases of a holder that died, and renew the leases of a holder that lives.
 */
export interface SharedHostLimits {
  tryAcquire(host: string, limits: { concurrency: number; minIntervalMs: number }): Promise<SharedAttempt>;
  /** Nobody anywhere starts a request to `host` for `ms`; never shortens a longer cool-down. */
  coolDown(host: string, ms: number): Promise<void>;
}

export const DEFAULT_POLITENESS: PolitenessOptions = {
  concurrency: 4,
  minIntervalMs: 0,
  defaultCoolDownMs: 30_000,
  maxCoolDownMs: 3_600_000,
  maxWaitMs: 60_000,
};

/** Gives the slot back. Calling it more than once is harmless. */
export type Release = () => void;

interface Waiter {
  resolve: (release: Release) => void;
  reject: (err: unknown) => void;
  signal: AbortSignal | undefined;
  onAbort: () => void;
}

interface HostState {
  active: number;
  queue: Waiter[];
  /** performance.now() of the last request start. */
  lastStart: number;
  /** performance.now() until which no request may start. */
  coolUntil: number;
  timer: NodeJS.Timeout | undefined;
}

/** How often a waiter asks the shared store again while every slot is taken (±50 % jitter). */
const SHARED_POLL_MS = 100;
/** Longest a shared lease passes from request to request in one process before it goes back. */
const SHARED_REUSE_MS = 1000;
/** How long a finished request's shared lease (and its local slot) waits for the next request. */
const SHARED_PARK_MS = 250;

interface HeldLease {
  lease: HostLease;
  /** performance.now() when the store granted it. */
  since: number;
  releaseLocal: Release;
}

interface ParkedLease extends HeldLease {
  timer: NodeJS.Timeout | undefined;
}

/** Gives the lease back to the store, then the local slot (so this process's next waiter finds the store's slot free). */
function giveBack(held: HeldLease): void {
  void held.lease.release().catch(() => {}).finally(held.releaseLocal);
}

export class Politeness {
  readonly options: PolitenessOptions;
  readonly #hosts = new Map<string, HostState>();
  readonly #shared: SharedHostLimits | undefined;
  /** Finished requests' leases, each with its local slot, waiting SHARED_PARK_MS for the next request. */
  readonly #parked = new Map<string, ParkedLease[]>();
  /** Leases handed to the waiters the local gate is starting now. */
  readonly #handed = new Map<string, { lease: HostLease; since: number }[]>();

  constructor(options: Partial<PolitenessOptions> = {}, shared?: SharedHostLimits) {
    this.options = { ...DEFAULT_POLITENESS, ...options };
    if (!(this.options.concurrency >= 1)) throw new RangeError('concurrency must be at least 1');
    this.#shared = shared;
  }

  /**
   * Waits for a slot to `host` (a URL's `host`: name and port) and returns its release.
   *
   * @throws RateLimitedError when the host is cooling down for longer than `maxWaitMs`
   * @throws the signal's reason when `signal` aborts while waiting
   */
  acquire(host: string, signal?: AbortSignal): Promise<Release> {
    const shared = this.#shared;
    if (!shared) return this.#acquireLocal(host, signal);
    if (signal?.aborted) return Promise.reject(signal.reason);
    const parked = this.#takeParked(host);
    if (parked) return Promise.resolve(this.#holding(host, parked));
    return this.#acquireLocal(host, signal).then(async (releaseLocal) => {
      try {
        // A lease handed over by the request this one waited behind (see #holding).
        const list = this.#handed.get(host);
        const handed = list?.shift();
        if (list?.length === 0) this.#handed.delete(host);
        const held = handed ? { ...handed, releaseLocal } : { lease: await this.#acquireShared(shared, host, signal), since: performance.now(), releaseLocal };
        return this.#holding(host, held);
      } catch (err) {
        releaseLocal();
        throw err;
      }
    });
  }

  /**
   * The release of a request that holds a local slot and a shared lease. A lease is a round trip
   * to the store to take and one to give back, which cost more than a small repo's import: so,
   * with no pacing to keep, a finished request's lease goes to the next request of this process
   * for the same host — the one waiting for the slot, or one that starts within
   * SHARED_PARK_MS — rather than back to the store. A lease goes back after SHARED_REUSE_MS
   * at most, so that a cool-down another worker set reaches this one within that.
   */
  #holding(host: string, held: HeldLease): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const state = this.#state(host);
      const now = performance.now();
      const reusable = this.options.minIntervalMs === 0 && now - held.since < SHARED_REUSE_MS && state.coolUntil <= now;
      if (reusable && state.queue.length > 0) {
        // The next waiter gets this slot from the local gate, and the lease with it.
        let list = this.#handed.get(host);
        if (!list) this.#handed.set(host, (list = []));
        const handed = { lease: held.lease, since: held.since };
        list.push(handed);
        held.releaseLocal();
        // The waiter takes it at once; one that was aborted meanwhile leaves it to go back.
        setTimeout(() => {
          const i = list.indexOf(handed);
          if (i < 0) return;
          list.splice(i, 1);
          if (list.length === 0 && this.#handed.get(host) === list) this.#handed.delete(host);
          void handed.lease.release().catch(() => {});
        }, SHARED_PARK_MS).unref();
        return;
      }
      if (reusable) {
        let list = this.#parked.get(host);
        if (!list) this.#parked.set(host, (list = []));
        const entry: ParkedLease = { ...held, timer: undefined };
        entry.timer = setTimeout(() => {
          const i = list.indexOf(entry);
          if (i < 0) return;
          list.splice(i, 1);
          if (list.length === 0 && this.#parked.get(host) === list) this.#parked.delete(host);
          giveBack(entry);
        }, SHARED_PARK_MS);
        entry.timer.unref();
        list.push(entry);
        return;
      }
      giveBack(held);
    };
  }

  /** A parked lease (with its local slot) a new request may take, when the limits allow it now. */
  #takeParked(host: string): HeldLease | undefined {
    const list = this.#parked.get(host);
    if (!list) return undefined;
    const now = performance.now();
    const state = this.#state(host);
    while (list.length > 0) {
      const entry = list.shift()!;
      clearTimeout(entry.timer);
      if (now - entry.since < SHARED_REUSE_MS && state.coolUntil <= now && state.queue.length === 0) {
        if (list.length === 0) this.#parked.delete(host);
        state.lastStart = now;
        return entry;
      }
      giveBack(entry);
    }
    this.#parked.delete(host);
    return undefined;
  }

  /** Asks the shared store until it grants a lease, waiting out pacing and cool-downs it reports. */
  async #acquireShared(shared: SharedHostLimits, host: string, signal: AbortSignal | undefined): Promise<HostLease> {
    const limits = { concurrency: this.options.concurrency, minIntervalMs: this.options.minIntervalMs };
    for (;;) {
      signal?.throwIfAborted();
      const attempt = await shared.tryAcquire(host, limits);
      if (attempt.lease) return attempt.lease;
      if (attempt.coolingDown && attempt.waitMs > this.options.maxWaitMs) {
        throw new RateLimitedError(host, Math.ceil(attempt.waitMs), 'waiting for a slot');
      }
      const pause = attempt.waitMs > 0 ? attempt.waitMs : SHARED_POLL_MS * (0.5 + Math.random());
      await abortableSleep(Math.ceil(pause), signal);
    }
  }

  #acquireLocal(host: string, signal?: AbortSignal): Promise<Release> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const state = this.#state(host);
    const wait = state.coolUntil - performance.now();
    if (wait > this.options.maxWaitMs) return Promise.reject(new RateLimitedError(host, Math.ceil(wait), 'waiting for a slot'));
    return new Promise<Release>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          const i = state.queue.indexOf(waiter);
          if (i >= 0) state.queue.splice(i, 1);
          reject(signal!.reason);
          this.#pump(host, state);
        },
      };
      signal?.addEventListener('abort', waiter.onAbort, { once: true });
      state.queue.push(waiter);
      this.#pump(host, state);
    });
  }

  /**
   * Nobody starts a request to `host` for `ms` (default `defaultCoolDownMs`, at most
   * `maxCoolDownMs`); requests in flight go on. A shorter cool-down never cuts a longer one short.
   */
  coolDown(host: string, ms: number | undefined): void {
    const state = this.#state(host);
    const span = Math.min(Math.max(0, ms ?? this.options.defaultCoolDownMs), this.options.maxCoolDownMs);
    state.coolUntil = Math.max(state.coolUntil, performance.now() + span);
    // Best effort: a cool-down the store missed is learned again from that worker's own 429.
    if (this.#shared && span > 0) void this.#shared.coolDown(host, span).catch(() => {});
    if (span > this.options.maxWaitMs) {
      for (const w of state.queue.splice(0)) {
        w.signal?.removeEventListener('abort', w.onAbort);
        w.reject(new RateLimitedError(host, Math.ceil(span), 'waiting for a slot'));
      }
    }
    this.#pump(host, state);
  }

  /** Milliseconds left of the host's cool-down (0 when none). */
  coolDownLeft(host: string): number {
    const state = this.#hosts.get(host);
    return state ? Math.max(0, Math.ceil(state.coolUntil - performance.now())) : 0;
  }

  /** Requests in flight and waiting, per host, for progress reports and tests. */
  stats(host: string): { active: number; waiting: number } {
    const state = this.#hosts.get(host);
    return { active: state?.active ?? 0, waiting: state?.queue.length ?? 0 };
  }

  #state(host: string): HostState {
    let state = this.#hosts.get(host);
    if (!state) {
      state = { active: 0, queue: [], lastStart: -Infinity, coolUntil: -Infinity, timer: undefined };
      this.#hosts.set(host, state);
    }
    return state;
  }

  /** Starts as many waiters as the limits allow now, and schedules itself for the next one. */
  #pump(host: string, state: HostState): void {
    while (state.queue.length > 0 && state.active < this.options.concurrency) {
      const now = performance.now();
      const startAt = Math.max(state.lastStart + this.options.minIntervalMs, state.coolUntil);
      if (startAt > now) {
        if (state.timer) clearTimeout(state.timer);
        // Not unref'd: a caller awaiting acquire() is exactly what should keep the process alive.
        state.timer = setTimeout(() => {
          state.timer = undefined;
          this.#pump(host, state);
        }, Math.ceil(startAt - now));
        return;
      }
      const waiter = state.queue.shift()!;
      waiter.signal?.removeEventListener('abort', waiter.onAbort);
      state.active++;
      state.lastStart = now;
      let released = false;
      waiter.resolve(() => {
        if (released) return;
        released = true;
        state.active--;
        this.#pump(host, state);
      });
    }
    this.#forgetIfIdle(host, state);
  }

  // Without this a full-network backfill would keep one entry per PDS it ever saw.
  #forgetIfIdle(host: string, state: HostState): void {
    const now = performance.now();
    if (state.active === 0 && state.queue.length === 0 && !state.timer && state.coolUntil <= now && state.lastStart + this.options.minIntervalMs <= now) {
      this.#hosts.delete(host);
    }
  }
}

function abortableSleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
