/**
 * The blocks of a CAR, indexed by CID, kept where they were read.
 *
 * A `Map<string, Uint8Array>` would cost a CID string, a typed-array view and a map entry per
 * block — about 200 bytes each, which for a large repo is more than its bytes — and a base32
 * encode and a string hash for every insert and lookup. Here a block is three integers into the
 * buffers it was read from, and the index is an open-addressed table keyed by bytes of the
 * CID's digest (mixed with a secret seed), probed by comparing the 36 CID bytes in place. The
 * read side is Map-like (`get`, `has`, `size`, iteration of `[cid, bytes]`), so callers that
 * want CID strings have them, and those that write CARs or index by CID bytes (`carBlocks`,
 * `cidAt`) need never make one.
 */
import { randomBytes } from 'node:crypto';
import type { CarBlock } from '@atcute/car';
import { CID_LENGTH, cidFromString, cidToString } from './cid.ts';
import { release, resized } from './typed-arrays.ts';

export class BlockMap {
  readonly #buffers: Uint8Array[] = [];
  // Per block: which buffer, where its CID starts (data follows the CID), where its data ends.
  #buffer: Uint32Array;
  #start: Uint32Array;
  #end: Uint32Array;
  #size = 0;
  // Open addressing, linear probing, kept at most three quarters full (at half, a large repo's
  // table was up to 32 bytes a block; a probe past a taken slot costs a comparison of the
  // fingerprint beside it, not a read of the CAR). Each slot is two ints: block index + 1
  // (0 = empty) and a fingerprint of the CID.
  #table: Int32Array;

  /**
   * @param capacity blocks to make room for before growing: a firehose frame's few blocks need
   *   not pay for the 44 KB a repo's map starts with
   */
  constructor(capacity = 1024) {
    const n = Math.max(8, Math.ceil(capacity));
    // Room for n blocks with the table at most three quarters full (it is rehashed past that).
    let slots = 16;
    while (4 * n > 3 * slots) slots *= 2;
    // One allocation for the four arrays: each typed array past a few dozen bytes has a backing
    // store of its own outside the heap, which cost more than verifying a small repo's blocks,
    // and every repo's map makes them. Growing replaces them one by one, as before.
    const memory = new ArrayBuffer(4 * (3 * n + 2 * slots));
    this.#table = new Int32Array(memory, 0, 2 * slots);
    this.#buffer = new Uint32Array(memory, 8 * slots, n);
    this.#start = new Uint32Array(memory, 8 * slots + 4 * n, n);
    this.#end = new Uint32Array(memory, 8 * slots + 8 * n, n);
  }

  /** Number of blocks. */
  get size(): number {
    return this.#size;
  }

  /**
   * Adds the block whose CID starts at `start` in `buffer` and whose data ends at `end`.
   * Used by the CAR reader: the caller has checked the CID and the hash. Returns false (and
   * keeps the first copy) if a block with this CID is already held.
   */
  add(buffer: Uint8Array, start: number, end: number): boolean {
    const slot = this.#probe(buffer, start);
    if (slot < 0) return false;
    const buffers = this.#buffers;
    if (buffers[buffers.length - 1] !== buffer) buffers.push(buffer);
    const index = this.#size;
    if (index === this.#start.length) this.#grow();
    this.#buffer[index] = buffers.length - 1;
    this.#start[index] = start;
    this.#end[index] = end;
    this.#size = index + 1;
    if (this.#size * 8 > this.#table.length * 3) {
      this.#rehash(this.#table.length * 2);
    } else {
      this.#table[slot << 1] = index + 1;
      this.#table[(slot << 1) + 1] = fingerprint(buffer, start);
    }
    return true;
  }

  /** True when block `index`'s CID is the 36 bytes at `offset` of `cid` (compared from the digest's last byte: another CID differs at once). */
  isAt(index: number, cid: Uint8Array, offset = 0): boolean {
    const buffer = this.#buffers[this.#buffer[index]!]!;
    const start = this.#start[index]!;
    for (let i = CID_LENGTH - 1; i >= 0; i--) if (buffer[start + i] !== cid[offset + i]) return false;
    return true;
  }

  /** Index of the block whose CID is the 36 bytes at `offset` of `cid`, or -1. */
  indexOf(cid: Uint8Array, offset = 0): number {
    const slot = this.#probe(cid, offset);
    return slot < 0 ? this.#table[~slot << 1]! - 1 : -1;
  }

  /**
   * Probes for a CID: the empty slot where it would go, or `~slot` (negative) of the slot that
   * holds it.
   */
  #probe(cid: Uint8Array, offset: number): number {
    const table = this.#table;
    const mask = (table.length >> 1) - 1;
    const print = fingerprint(cid, offset);
    let slot = slotHash(cid, offset) & mask;
    for (;;) {
      const entry = table[slot << 1]!;
      if (entry === 0) return slot;
      // The fingerprint turns away other blocks without reading the CAR at a random place.
      if (table[(slot << 1) + 1] === print) {
        const index = entry - 1;
        const buffer = this.#buffers[this.#buffer[index]!]!;
        const start = this.#start[index]!;
        let i = 0;
        while (i < CID_LENGTH && buffer[start + i] === cid[offset + i]) i++;
        if (i === CID_LENGTH) return ~slot;
      }
      slot = (slot + 1) & mask;
    }
  }

  /** The data of block `index`: a view into the buffer it was read from. */
  dataAt(index: number): Uint8Array {
    const buffer = this.#buffers[this.#buffer[index]!]!;
    return buffer.subarray(this.#start[index]! + CID_LENGTH, this.#end[index]!);
  }

  /**
   * Where block `index` sits: the buffer it was read from, where its CID starts (its data
   * follows) and where its data ends. Writers of CARs use these to copy a run of blocks that
   * sit framed side by side in one buffer (a pack) as one view.
   */
  bufferAt(index: number): Uint8Array {
    return this.#buffers[this.#buffer[index]!]!;
  }

  startAt(index: number): number {
    return this.#start[index]!;
  }

  /** The buffers blocks were read from, each once; block `index` is in the one at `bufferIndexAt(index)`. */
  get buffers(): readonly Uint8Array[] {
    return this.#buffers;
  }

  bufferIndexAt(index: number): number {
    return this.#buffer[index]!;
  }

  endAt(index: number): number {
    return this.#end[index]!;
  }

  /** Makes room for `more` blocks beyond those held, so that adding them never rehashes. */
  reserve(more: number): void {
    const want = this.#size + more;
    if (want > this.#start.length) {
      this.#buffer = resized(this.#buffer, want);
      this.#start = resized(this.#start, want);
      this.#end = resized(this.#end, want);
    }
    let slots = this.#table.length >> 1;
    while (want * 4 > slots * 3) slots *= 2;
    if (slots * 2 !== this.#table.length) this.#rehash(slots * 2);
  }

  /**
   * Lets go of the room made for blocks beyond those held (up to as many again, the arrays
   * growing by doubling): for a map that is complete, as a CAR's is once read.
   */
  trim(): void {
    if (this.#start.length === this.#size) return;
    this.#buffer = resized(this.#buffer, this.#size);
    this.#start = resized(this.#start, this.#size);
    this.#end = resized(this.#end, this.#size);
  }

  /** The 36 CID bytes of block `index`: a view. */
  cidAt(index: number): Uint8Array {
    const start = this.#start[index]!;
    return this.#buffers[this.#buffer[index]!]!.subarray(start, start + CID_LENGTH);
  }

  /** The CID string of block `index`. */
  cidStringAt(index: number): string {
    return cidToString(this.#buffers[this.#buffer[index]!]!, this.#start[index]!);
  }

  /** The block with this CID (string form, `b…`), or undefined. */
  get(cid: string): Uint8Array | undefined {
    const bytes = cidFromString(cid);
    const index = bytes === undefined ? -1 : this.indexOf(bytes);
    return index < 0 ? undefined : this.dataAt(index);
  }

  has(cid: string): boolean {
    const bytes = cidFromString(cid);
    return bytes !== undefined && this.indexOf(bytes) >= 0;
  }

  /** `[cid string, data]` pairs, like a `Map<string, Uint8Array>`, in CAR order. */
  *entries(): IterableIterator<[string, Uint8Array]> {
    for (let i = 0; i < this.#size; i++) yield [this.cidStringAt(i), this.dataAt(i)];
  }

  [Symbol.iterator](): IterableIterator<[string, Uint8Array]> {
    return this.entries();
  }

  *keys(): IterableIterator<string> {
    for (let i = 0; i < this.#size; i++) yield this.cidStringAt(i);
  }

  /** Blocks as `@atcute/car` writes them (`{ cid: bytes, data }`): no strings made. */
  *carBlocks(): IterableIterator<CarBlock> {
    for (let i = 0; i < this.#size; i++) yield { cid: this.cidAt(i), data: this.dataAt(i) };
  }

  /**
   * A copy sharing the buffers (never copied: they are read only), with its own index: what
   * one reader adds to it does not show in the other. Costs a copy of the index arrays
   * (about 40 bytes per block), against a parse and an insert per block to build it again.
   */
  clone(): BlockMap {
    const copy = new BlockMap(0);
    copy.#buffers.push(...this.#buffers);
    copy.#buffer = this.#buffer.slice();
    copy.#start = this.#start.slice();
    copy.#end = this.#end.slice();
    copy.#table = this.#table.slice();
    copy.#size = this.#size;
    return copy;
  }

  /** Bytes the index itself takes (not the buffers it points into). */
  get indexBytes(): number {
    return this.#buffer.byteLength + this.#start.byteLength + this.#end.byteLength + this.#table.byteLength;
  }

  /** Keeps only the blocks whose `keep[index]` is non-zero; indexes are renumbered. */
  retain(keep: Uint8Array): void {
    let to = 0;
    for (let from = 0; from < this.#size; from++) {
      if (keep[from] === 0) continue;
      this.#buffer[to] = this.#buffer[from]!;
      this.#start[to] = this.#start[from]!;
      this.#end[to] = this.#end[from]!;
      to++;
    }
    this.#size = to;
    this.#rehash(this.#table.length);
  }

  // Grown, trimmed and rehashed with the old arrays let go at once (typed-arrays.ts): growing by
  // copying left every smaller size behind for a full collection, some MB for a large repo.
  #grow(): void {
    const n = Math.max(8, this.#start.length * 2);
    this.#buffer = resized(this.#buffer, n);
    this.#start = resized(this.#start, n);
    this.#end = resized(this.#end, n);
  }

  #rehash(length: number): void {
    const old = this.#table;
    this.#table = new Int32Array(length);
    for (let i = 0; i < this.#size; i++) this.#insert(i);
    release(old);
  }

  #insert(index: number): void {
    const table = this.#table;
    const mask = (table.length >> 1) - 1;
    const buffer = this.#buffers[this.#buffer[index]!]!;
    const start = this.#start[index]!;
    let slot = slotHash(buffer, start) & mask;
    while (table[slot << 1] !== 0) slot = (slot + 1) & mask;
    table[slot << 1] = index + 1;
    table[(slot << 1) + 1] = fingerprint(buffer, start);
  }
}

// Secret per process: a digest is uniform only if nobody mined it. Someone who mines blocks
// whose digests agree in the few bits that pick a slot could otherwise pile every block into
// one probe chain and make the index quadratic; with the seed unknown, a collision needs 64
// matching digest bits per block.
const SEEDS = randomBytes(8);
const SEED0 = SEEDS.readInt32LE(0);
const SEED1 = SEEDS.readInt32LE(4);

/** Slot hash of a CID: eight digest bytes, seeded and mixed (murmur3's finalizer). */
function slotHash(cid: Uint8Array, offset: number): number {
  return (mix(word(cid, offset + 4) ^ SEED0) ^ mix(word(cid, offset + 8) ^ SEED1)) >>> 0;
}

/** Four other digest bytes, with the codec byte: equal fingerprints almost always mean equal CIDs. */
function fingerprint(cid: Uint8Array, offset: number): number {
  return word(cid, offset + 12) ^ cid[offset + 1]!;
}

function word(bytes: Uint8Array, at: number): number {
  return bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24);
}

function mix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return h ^ (h >>> 16);
}
