/**
 * Group commit for the store path: callers submit one change each and wait for its outcome;
 * the batcher stores whatever has gathered as one batch (one pack, one transaction), while the
 * next batch gathers behind it. Many concurrent fetch-and-verify lanes thus share transactions
 * without waiting for one another beyond the batch in flight.
 *
 * A batch costs a fixed part (a transaction, a pack, a dozen statements) besides its rows; with
 * `gatherMs`, a batch that is not full waits for its oldest change to be that old before it is
 * stored, so that producers who need not wait for their outcomes (the bulk backfill's lanes)
 * fill batches well even when they are quicker than the database. `endOfInput()` stores what is
 * left at once.
 */
import type { BatchOptions, ChangeOutcome, RepoChange } from './changes.ts';
import { storeBatch, type StoreDeps } from './store.ts';
import { mark } from './timeline.ts';

/** The least changes in a batch split off at the end of input: below it, a batch's fixed cost dominates. */
const MIN_SPLIT = 32;

export interface BatcherLimits {
  /** Changes per batch at most. */
  maxChanges: number;
  /** Blocks (roughly: the new blocks the changes carry) per batch at most. */
  maxBlocks: number;
  /** How long a batch that is not full may wait for more changes, from its oldest (default 0). */
  gatherMs?: number;
  /**
   * Batches stored at once (default 1). More than one overlaps one batch's transaction with the
   * next one's gathering and planning, so a store that is slower than its producers for a while
   * does not stop them; only for changes whose order across batches does not matter (the bulk
   * backfill's, one snapshot per repo), since concurrent batches commit in any order.
   */
  maxInFlight?: number;
}

interface Pending {
  change: RepoChange;
  blocks: number;
  /** When it was submitted (performance.now()). */
  at: number;
  resolve: (o: { outcome: ChangeOutcome; packKey: string | undefined; newBlocks: number; packBytes: number }) => void;
  reject: (err: unknown) => void;
}

export class StoreBatcher {
  readonly #queue: Pending[] = [];
  /** Blocks of the changes in the queue. */
  #queuedBlocks = 0;
  #flushing = false;
  /** Batches being stored. */
  readonly #inFlight = new Set<Promise<void>>();
  /** Callers of `room()` waiting for the queue to fall below a batch. */
  #waiting: (() => void)[] = [];
  /** Ends the current gathering wait early (a full batch, or the end of input). */
  #stopGathering: (() => void) | undefined;
  #ended = false;
  readonly deps: StoreDeps;
  readonly options: Omit<BatchOptions, 'cursor'>;
  readonly limits: BatcherLimits;
  constructor(deps: StoreDeps, options: Omit<BatchOptions, 'cursor'>, limits: BatcherLimits = { maxChanges: 64, maxBlocks: 50_000 }) {
    this.deps = deps;
    this.options = options;
    this.limits = limits;
  }

  /** Stores `change` in the next batch; resolves with its own outcome (and its batch's pack). */
  submit(change: RepoChange): Promise<{ outcome: ChangeOutcome; packKey: string | undefined; newBlocks: number; packBytes: number }> {
    const blocks = change.kind === 'snapshot' ? change.repo.blocks.size : change.kind === 'commit' ? change.blocks.size : 0;
    return new Promise((resolve, reject) => {
      this.#queue.push({ change, blocks, at: performance.now(), resolve, reject });
      this.#queuedBlocks += blocks;
      if (this.#full()) this.#stopGathering?.();
      if (!this.#flushing) void this.#drain();
    });
  }

  /**
   * Resolves once less than a batch (in changes and in blocks) waits behind the batch in flight:
   * a producer that does not await `submit` (many submissions in flight) awaits this to bound
   * what it holds.
   */
  room(): Promise<void> {
    if (!this.#full()) return Promise.resolve();
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  /** Whether `room()` would resolve at once. */
  hasRoom(): boolean {
    return !this.#full();
  }

  /** No more changes are coming for now: what waits is stored without gathering. */
  endOfInput(): void {
    this.#ended = true;
    this.#stopGathering?.();
  }

  #full(): boolean {
    return this.#queue.length >= this.limits.maxChanges || this.#queuedBlocks >= this.limits.maxBlocks;
  }

  #wake(): void {
    while (this.#waiting.length > 0 && !this.#full()) this.#waiting.shift()!();
  }

  /** Waits, when gathering, until the batch is full, its oldest change is `gatherMs` old, or input ends. */
  async #gather(): Promise<void> {
    const gatherMs = this.limits.gatherMs ?? 0;
    if (gatherMs <= 0 || this.#ended || this.#full()) return;
    const left = this.#queue[0]!.at + gatherMs - performance.now();
    if (left <= 0) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, left);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#stopGathering = done;
    });
    this.#stopGathering = undefined;
  }

  async #drain(): Promise<void> {
    this.#flushing = true;
    // One macrotask of grace, so that lanes finishing together land in one batch.
    await new Promise((r) => setImmediate(r));
    try {
      while (this.#queue.length > 0) {
        while (this.#inFlight.size >= (this.limits.maxInFlight ?? 1)) await Promise.race(this.#inFlight);
        await this.#gather();
        const batch: Pending[] = [];
        let blocks = 0;
        const most = this.#batchSize();
        while (this.#queue.length > 0 && batch.length < most) {
          const next = this.#queue[0]!;
          if (batch.length > 0 && blocks + next.blocks > this.limits.maxBlocks) break;
          batch.push(this.#queue.shift()!);
          blocks += next.blocks;
        }
        this.#queuedBlocks -= blocks;
        this.#wake();
        const stored = this.#store(batch);
        this.#inFlight.add(stored);
        void stored.finally(() => this.#inFlight.delete(stored));
      }
    } finally {
      this.#flushing = false;
    }
  }

  /**
   * Changes in the next batch at most: `maxChanges`, except once input has ended, when what is
   * left is shared among the free batch slots (no batch split off under `MIN_SPLIT`), so that the last
   * changes, which every caller is now waiting for, are stored side by side rather than one
   * batch after another.
   */
  #batchSize(): number {
    const free = (this.limits.maxInFlight ?? 1) - this.#inFlight.size;
    if (!this.#ended || free <= 1 || this.#queue.length < 2 * MIN_SPLIT) return this.limits.maxChanges;
    return Math.min(this.limits.maxChanges, Math.max(MIN_SPLIT, Math.ceil(this.#queue.length / free)));
  }

  /** Stores one batch and settles its callers; never rejects. */
  async #store(batch: Pending[]): Promise<void> {
    try {
      mark('batch-begin', batch.length);
      const result = await storeBatch(this.deps, batch.map((p) => p.change), this.options);
      mark('batch-commit', batch.length);
      batch.forEach((p, i) => p.resolve({ outcome: result.outcomes[i]!, packKey: result.packKey, newBlocks: result.perChange[i]!.newBlocks, packBytes: result.perChange[i]!.blockBytes }));
    } catch (err) {
      mark('batch-commit', batch.length);
      // The whole batch rolled back; each caller decides (Temporal retries the activity).
      for (const p of batch) p.reject(err);
    }
  }
}
