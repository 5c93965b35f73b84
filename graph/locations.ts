/**
 * Block locations a root read in bulk (the block index of its repo's packs), held compactly:
 * per block its 36 CID bytes and four numbers in typed arrays, found through an open-addressed
 * table keyed by the CID's digest — no string, object or Map entry per block. A repo of 100,000
 * records has some 140,000 blocks; as `Map<string, BlockLoc>` they cost about 170 bytes each
 * and a string made for every lookup, here about 70 bytes and none.
 */
import { randomBytes } from 'node:crypto';
import type { BlockLoc } from './nodes.ts';

const CID = 36;

// Secret per process, as in atproto/block-map.ts: digests are uniform only if nobody mined them.
const SEED = randomBytes(4).readInt32LE(0);

// Small to begin with: every root has a table, and most repos hold a few dozen blocks.
const INITIAL = 32;

// Every table starts empty, on these (never written): a root's Repo read sizes its table at once
// (`reserve`), so arrays made in the constructor were garbage at once — six arrays a root, 2.6 %
// of a walk of 2,000 repos of 10 records.
const NO_CIDS = new Uint8Array(0);
const NO_INTS = new Int32Array(0);
const NO_FLOATS = new Float64Array(0);

export class LocationTable {
  #cids = NO_CIDS;
  #pack = NO_INTS;
  #offset = NO_FLOATS;
  #length = NO_INTS;
  #refcount = NO_FLOATS;
  #size = 0;
  #slots = NO_INTS;
  readonly #packs: { id: number; key: string | null; size: number }[] = [];
  readonly #packIndex = new Map<number, number>();
  /** Another table asked about a block this one lacks (`share`). */
  #shared: LocationTable | undefined;

  get size(): number {
    return this.#size;
  }

  /** Makes room for `n` blocks in all, at once. */
  reserve(n: number): void {
    if (n > this.#pack.length) this.#grow(n);
    let slots = Math.max(this.#slots.length, INITIAL * 2);
    while (n * 2 > slots) slots *= 2;
    if (slots > this.#slots.length) this.#rehash(slots);
  }

  /**
   * Answers for the blocks of `other` too, where this table lacks them, without copying them: a
   * batch of repos reads the block index of their packs into one table, which each repo's root
   * shares. (Copied into each root's table, a pack that 250 small repos filled was copied 250
   * times, every block of it: 45 % of the walk's thread on a mirror the bulk backfill built.)
   * A block has one location in the index, so the answer is the same wherever it is found.
   */
  share(other: LocationTable): void {
    if (other === this) throw new Error('a location table cannot share itself');
    this.#shared = other;
  }

  /** Registers a pack; returns its index for `add`. */
  pack(id: number, key: string | null, size: number): number {
    let i = this.#packIndex.get(id);
    if (i === undefined) {
      i = this.#packs.length;
      this.#packs.push({ id, key, size });
      this.#packIndex.set(id, i);
    }
    return i;
  }

  /** Adds the block whose CID is `cid[at..at+36]`; a CID already held keeps its first location. */
  add(cid: Uint8Array, at: number, pack: number, offset: number, length: number, refcount: number): void {
    if (this.#find(cid, at) >= 0) return;
    const i = this.#size;
    if (i === this.#pack.length) this.#grow();
    // Byte by byte: a `subarray` to copy from was an object per block.
    const cids = this.#cids;
    const base = i * CID;
    for (let k = 0; k < CID; k++) cids[base + k] = cid[at + k]!;
    this.#pack[i] = pack;
    this.#offset[i] = offset;
    this.#length[i] = length;
    this.#refcount[i] = refcount;
    this.#size = i + 1;
    if (this.#size * 2 > this.#slots.length) this.#rehash(Math.max(INITIAL * 2, this.#slots.length * 2));
    else this.#insert(i);
  }

  /** The id of the pack that holds the block whose CID is `cid[at..at+36]`, or −1 when the table lacks it. */
  packOf(cid: Uint8Array, at: number): number {
    const i = this.#find(cid, at);
    if (i < 0) return this.#shared ? this.#shared.packOf(cid, at) : -1;
    return this.#packs[this.#pack[i]!]!.id;
  }

  /** The location of `cid` (36 bytes), or undefined. */
  get(cid: Uint8Array): BlockLoc | undefined {
    if (cid.length !== CID) return undefined;
    const i = this.#find(cid, 0);
    if (i < 0) return this.#shared?.get(cid);
    const p = this.#packs[this.#pack[i]!]!;
    return { packId: p.id, packKey: p.key, packSize: p.size, offset: this.#offset[i]!, length: this.#length[i]!, refcount: this.#refcount[i]! };
  }

  #find(cid: Uint8Array, at: number): number {
    if (this.#size === 0) return -1;
    const slots = this.#slots;
    const mask = slots.length - 1;
    const cids = this.#cids;
    for (let s = slotOf(cid, at) & mask; ; s = (s + 1) & mask) {
      const e = slots[s]!;
      if (e === 0) return -1;
      const base = (e - 1) * CID;
      let k = CID - 1;
      // Digest bytes first: they differ at once when the CIDs differ.
      while (k >= 0 && cids[base + k] === cid[at + k]) k--;
      if (k < 0) return e - 1;
    }
  }

  #insert(i: number): void {
    const slots = this.#slots;
    const mask = slots.length - 1;
    let s = slotOf(this.#cids, i * CID) & mask;
    while (slots[s] !== 0) s = (s + 1) & mask;
    slots[s] = i + 1;
  }

  #rehash(n: number): void {
    this.#slots = new Int32Array(n);
    for (let i = 0; i < this.#size; i++) this.#insert(i);
  }

  #grow(to = this.#pack.length * 2): void {
    const n = Math.max(to, this.#pack.length * 2, INITIAL);
    const cids = new Uint8Array(n * CID);
    cids.set(this.#cids);
    this.#cids = cids;
    const grow = <T extends Int32Array | Float64Array>(old: T, make: (n: number) => T): T => {
      const next = make(n);
      next.set(old);
      return next;
    };
    this.#pack = grow(this.#pack, (k) => new Int32Array(k));
    this.#offset = grow(this.#offset, (k) => new Float64Array(k));
    this.#length = grow(this.#length, (k) => new Int32Array(k));
    this.#refcount = grow(this.#refcount, (k) => new Float64Array(k));
  }
}

function slotOf(cid: Uint8Array, at: number): number {
  // Digest bytes 4..12 of the CID, seeded and mixed (murmur3's finalizer).
  let h = (cid[at + 4]! | (cid[at + 5]! << 8) | (cid[at + 6]! << 16) | (cid[at + 7]! << 24)) ^ SEED;
  h ^= Math.imul(cid[at + 8]! | (cid[at + 9]! << 8) | (cid[at + 10]! << 16) | (cid[at + 11]! << 24), 0x9e3779b1);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}
