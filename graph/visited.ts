/**
 * The visited set: which nodes a walk has already scheduled, in at most 24 bytes per node.
 *
 * A node is kept as its 96-bit identity hash (`hash.ts`: 12 bytes, seeded, so collisions can
 * neither happen by chance — about n²/2^96 — nor be mined) in one open-addressed table with
 * linear probing. The table grows by half when it is 80% full, so it is always between 53% and
 * 80% full: 15 to 22.5 bytes per node. (Doubling would swing between 40% and 80%, up to 30
 * bytes; a 16-byte hash would not fit the budget at any load a linear probe tolerates.)
 * While it grows, the old and the new table coexist for a moment: 2.5× the steady size.
 */
import { identityHash, lanes } from './hash.ts';
import type { Node } from './nodes.ts';

const LOAD = 0.8;
const GROWTH = 1.5;
// Small: every root has a set, and most repos are a few dozen nodes (1,024 slots cost a root
// 12 KB to zero and collect); a repo's record rows and events are not in it (`engine.ts`), so a
// repo of 10 records puts some 20 nodes there.
const MIN_SLOTS = 32;
// Typed arrays hold at most 2^32 − 1 elements in V8; three per slot.
const MAX_SLOTS = Math.floor((2 ** 32 - 1) / 3);

export class VisitedSetFullError extends Error {
  override name = 'VisitedSetFullError';
}

export class VisitedSet {
  #table: Int32Array;
  #slots: number;
  #size = 0;
  #limit: number;

  constructor(expected = 0) {
    this.#slots = Math.max(MIN_SLOTS, Math.ceil(expected / LOAD) + 1);
    this.#table = new Int32Array(this.#slots * 3);
    this.#limit = Math.floor(this.#slots * LOAD);
  }

  /** Nodes held. */
  get size(): number {
    return this.#size;
  }

  /** Bytes of the table (the set's whole memory, apart from a few fields). */
  get byteLength(): number {
    return this.#table.byteLength;
  }

  /**
   * Adds `node`; true if it was not there yet (the caller should visit it).
   * @throws {VisitedSetFullError} past about 1.1 billion nodes in one set.
   */
  add(node: Node): boolean {
    identityHash(node);
    return this.addHash(lanes[0]!, lanes[1]!, lanes[2]!);
  }

  /** Grows the table now to hold `n` nodes, instead of in steps as they come. */
  reserve(n: number): void {
    if (n <= this.#limit) return;
    const slots = Math.min(MAX_SLOTS, Math.ceil(n / LOAD) + 1);
    if (slots > this.#slots) this.#rehash(slots);
  }

  /** Whether `node` is in the set. */
  has(node: Node): boolean {
    identityHash(node);
    const a = lanes[0]!;
    const b = lanes[1]!;
    const c = lanes[2]!;
    const t = this.#table;
    for (let s = slotOf(a, b, this.#slots); ; s = s + 1 === this.#slots ? 0 : s + 1) {
      const i = s * 3;
      const x = t[i]!;
      if (x === 0) return false;
      if (x === a && t[i + 1] === b && t[i + 2] === c) return true;
    }
  }

  /** Adds a raw identity (lane 0 non-zero); true if it was new. */
  addHash(a: number, b: number, c: number): boolean {
    const t = this.#table;
    const slots = this.#slots;
    let s = slotOf(a, b, slots);
    for (;;) {
      const i = s * 3;
      const x = t[i]!;
      if (x === 0) break;
      if (x === a && t[i + 1] === b && t[i + 2] === c) return false;
      s = s + 1 === slots ? 0 : s + 1;
    }
    if (this.#size + 1 > this.#limit) {
      this.#grow();
      return this.addHash(a, b, c);
    }
    const i = s * 3;
    t[i] = a;
    t[i + 1] = b;
    t[i + 2] = c;
    this.#size++;
    return true;
  }

  #grow(): void {
    if (this.#slots >= MAX_SLOTS) throw new VisitedSetFullError(`visited set is full at ${this.#size} nodes; walk fewer repos per page`);
    this.#rehash(Math.min(MAX_SLOTS, Math.ceil(this.#slots * GROWTH)));
  }

  #rehash(slots: number): void {
    const old = this.#table;
    const oldSlots = this.#slots;
    const t = new Int32Array(slots * 3);
    for (let j = 0; j < oldSlots * 3; j += 3) {
      const a = old[j]!;
      if (a === 0) continue;
      const b = old[j + 1]!;
      let s = slotOf(a, b, slots);
      while (t[s * 3] !== 0) s = s + 1 === slots ? 0 : s + 1;
      t[s * 3] = a;
      t[s * 3 + 1] = b;
      t[s * 3 + 2] = old[j + 2]!;
    }
    this.#table = t;
    this.#slots = slots;
    this.#limit = Math.floor(slots * LOAD);
  }
}

/**
 * The home slot: 53 bits of the hash reduced modulo a table size that is not a power of two
 * (growth by 1.5 keeps it arbitrary); a double holds the 53-bit product exactly.
 */
function slotOf(a: number, b: number, slots: number): number {
  return ((a >>> 0) * 2097152 + (b >>> 11)) % slots;
}
