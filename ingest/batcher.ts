/**
 * Group commit for the store path: callers submit one change each and wait for its outcome;
 * the batcher stores whatever has gathered as one batch (one pack, one transaction), while the
 * next batch gathers behind it. Many concurrent fetch-and-verify lanes thus share transactions
 * without waiting for one another beyond the batch in flight.
 */
import type { BatchOptions, ChangeOutcome, RepoChange } from './changes.ts';
import { storeBatch, type StoreDeps } from './store.ts';

export interface BatcherLimits {
  /** Changes per batch at most. */
  maxChanges: number;
  /** Blocks (roughly: the new blocks the changes carry) per batch at most. */
  maxBlocks: number;
}

interface Pending {
  change: RepoChange;
  blocks: number;
  resolve: (o: { outcome: ChangeOutcome; packKey: string | undefined; newBlocks: number; packBytes: number }) => void;
  reject: (err: unknown) => void;
}

export class StoreBatcher {
  readonly #queue: Pending[] = [];
  #flushing = false;
  /** Callers of `room()` waiting for the queue to fall below a batch. */
  #waiting: (() => void)[] = [];
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
      this.#queue.push({ change, blocks, resolve, reject });
      if (!this.#flushing) void this.#drain();
    });
  }

  /**
   * Resolves once fewer than a batch of changes wait behind the batch in flight: a producer that
   * does not await `submit` (many submissions in flight) awaits this to bound what it holds.
   */
  room(): Promise<void> {
    if (this.#queue.length < this.limits.maxChanges) return Promise.resolve();
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  #wake(): void {
    while (this.#waiting.length > 0 && this.#queue.length < this.limits.maxChanges) this.#waiting.shift()!();
  }

  async #drain(): Promise<void> {
    this.#flushing = true;
    // One macrotask of grace, so that lanes finishing together land in one batch.
    await new Promise((r) => setImmediate(r));
    try {
      while (this.#queue.length > 0) {
        const batch: Pending[] = [];
        let blocks = 0;
        while (this.#queue.length > 0 && batch.length < this.limits.maxChanges) {
          const next = this.#queue[0]!;
          if (batch.length > 0 && blocks + next.blocks > this.limits.maxBlocks) break;
          batch.push(this.#queue.shift()!);
          blocks += next.blocks;
        }
        this.#wake();
        try {
          const result = await storeBatch(this.deps, batch.map((p) => p.change), this.options);
          batch.forEach((p, i) => p.resolve({ outcome: result.outcomes[i]!, packKey: result.packKey, newBlocks: result.perChange[i]!.newBlocks, packBytes: result.perChange[i]!.blockBytes }));
        } catch (err) {
          // The whole batch rolled back; each caller decides (Temporal retries the activity).
          for (const p of batch) p.reject(err);
        }
      }
    } finally {
      this.#flushing = false;
    }
  }
}
