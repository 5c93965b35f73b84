/**
 * The records of a verified repository, held compactly: every record key (rkey) in one byte
 * arena, each collection once with the run of records under it, and per record two integers
 * (where its rkey ends, its block in the `BlockMap`).
 *
 * An object per record — a path, an rkey and a CID string — cost about 250 bytes of heap each,
 * most of a large repo's memory beyond its CAR bytes, and the survivors of every young-generation
 * collection made V8 grow its new space to 64 MB. Here a record costs its rkey's bytes and 8
 * bytes (the whole path and a collection index per record were twice that: a tenth of the CAR).
 * Strings and objects are made when asked for, one record at a time (`pathAt`, `cidAt`, the
 * iterator), so a caller that streams the records keeps none of them.
 */
import type { BlockMap } from './block-map.ts';
import { latin1 } from './cid.ts';
import { resized } from './typed-arrays.ts';

/** One record of a repository, as the MST names it. */
export interface RepoRecord {
  collection: string;
  rkey: string;
  /** CID of the record block. */
  cid: string;
  /** `collection/rkey`, the MST key; records sort by it in byte order. */
  path: string;
}

/** Records, and bytes of keys, a list has room for before it first grows. */
const FIRST_RECORDS = 32;
const FIRST_KEY_BYTES = 1024;

export class RecordList implements Iterable<RepoRecord> {
  readonly blocks: BlockMap;
  // Small at first (most repos are), doubled as they fill.
  #keys: Uint8Array;
  #keysLength = 0;
  // Bytes of every path written out in full (what verify caps).
  #pathBytes = 0;
  // Per record: end of its rkey in #keys (it starts where the previous one ends), its block index.
  #keyEnd: Uint32Array;
  #block: Int32Array;
  // Per collection, in key order: its name and its first record.
  readonly #collections: string[] = [];
  readonly #runStart: number[] = [];
  // The run `collectionAt` found last: records are mostly read in order.
  #run = 0;
  #length = 0;

  constructor(blocks: BlockMap) {
    this.blocks = blocks;
    // The first arrays share one allocation (each its own would be a backing store apiece,
    // for every repo verified); growing replaces them one by one.
    const n = FIRST_RECORDS;
    const memory = new ArrayBuffer(8 * n + FIRST_KEY_BYTES);
    this.#keyEnd = new Uint32Array(memory, 0, n);
    this.#block = new Int32Array(memory, 4 * n, n);
    this.#keys = new Uint8Array(memory, 8 * n, FIRST_KEY_BYTES);
  }

  get length(): number {
    return this.#length;
  }

  /** Bytes of every key (`collection/rkey`), written out in full. */
  get keyBytes(): number {
    return this.#pathBytes;
  }

  /**
   * Appends a record whose key is `path`, a valid `collection/rkey` path (ASCII: one byte per
   * char, at most 1024), under `collection`, its prefix. Records come in key order, so a
   * collection's records are consecutive and its string is kept once.
   */
  pushPath(path: string, collection: string, block: number): void {
    const from = collection.length + 1;
    const at = this.#reserve(path.length - from);
    const keys = this.#keys;
    for (let i = from; i < path.length; i++) keys[at + i - from] = path.charCodeAt(i);
    this.#pathBytes += path.length;
    this.#append(path.length - from, collection, block);
  }

  /** Makes room for an rkey of `length` bytes; returns where it goes. */
  #reserve(length: number): number {
    if (this.#length === this.#keyEnd.length) this.#grow();
    if (this.#keysLength + length > this.#keys.length) this.#keys = resized(this.#keys, Math.max(this.#keys.length * 2, this.#keysLength + length));
    return this.#keysLength;
  }

  #append(keyLength: number, collection: string, block: number): void {
    const i = this.#length;
    this.#keysLength += keyLength;
    this.#keyEnd[i] = this.#keysLength;
    const collections = this.#collections;
    if (collections[collections.length - 1] !== collection) {
      collections.push(collection);
      this.#runStart.push(i);
    }
    this.#block[i] = block;
    this.#length = i + 1;
  }

  #keyStart(i: number): number {
    return i === 0 ? 0 : this.#keyEnd[i - 1]!;
  }

  /** The index of record `i`'s collection in `#collections`. */
  #runOf(i: number): number {
    const starts = this.#runStart;
    let r = this.#run;
    if (r < starts.length && starts[r]! <= i && (r + 1 === starts.length || i < starts[r + 1]!)) return r;
    if (r + 1 < starts.length && starts[r + 1]! <= i && (r + 2 === starts.length || i < starts[r + 2]!)) r++;
    else {
      let lo = 0;
      let hi = starts.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >>> 1;
        if (starts[mid]! <= i) lo = mid;
        else hi = mid - 1;
      }
      r = lo;
    }
    this.#run = r;
    return r;
  }

  /** `collection/rkey`. */
  pathAt(i: number): string {
    return `${this.collectionAt(i)}/${this.rkeyAt(i)}`;
  }

  collectionAt(i: number): string {
    return this.#collections[this.#runOf(i)]!;
  }

  rkeyAt(i: number): string {
    return latin1(this.#keys, this.#keyStart(i), this.#keyEnd[i]!);
  }

  /** The index of the record's block in `blocks`. */
  blockAt(i: number): number {
    return this.#block[i]!;
  }

  /** The record block's CID string. */
  cidAt(i: number): string {
    return this.blocks.cidStringAt(this.#block[i]!);
  }

  /** The record block's 36 CID bytes: a view, no copy. */
  cidBytesAt(i: number): Uint8Array {
    return this.blocks.cidAt(this.#block[i]!);
  }

  /** The distinct collections, in key order. */
  collections(): readonly string[] {
    return this.#collections;
  }

  /** Record `i` as an object (made now; not kept). */
  at(i: number): RepoRecord {
    return { collection: this.collectionAt(i), rkey: this.rkeyAt(i), cid: this.cidAt(i), path: this.pathAt(i) };
  }

  *[Symbol.iterator](): IterableIterator<RepoRecord> {
    for (let i = 0; i < this.#length; i++) yield this.at(i);
  }

  /** Every record as an object: what `VerifiedRepo.records` was before this list. */
  toArray(): RepoRecord[] {
    const out = new Array<RepoRecord>(this.#length);
    for (let i = 0; i < this.#length; i++) out[i] = this.at(i);
    return out;
  }

  /** Lets go of the room made for records and rkeys beyond those held (up to as much again): for a list that is complete. */
  trim(): void {
    const n = this.#length;
    if (this.#keyEnd.length > n) {
      this.#keyEnd = resized(this.#keyEnd, n);
      this.#block = resized(this.#block, n);
    }
    if (this.#keys.length > this.#keysLength) this.#keys = resized(this.#keys, this.#keysLength);
  }

  /** Renumbers block indexes after `BlockMap.retain`: `renumber[old]` is the new index. */
  renumberBlocks(renumber: Int32Array): void {
    for (let i = 0; i < this.#length; i++) this.#block[i] = renumber[this.#block[i]!]!;
  }

  // The old arrays are let go at once (typed-arrays.ts), not left for a full collection.
  #grow(): void {
    const n = Math.max(FIRST_RECORDS, this.#keyEnd.length * 2);
    this.#keyEnd = resized(this.#keyEnd, n);
    this.#block = resized(this.#block, n);
  }
}
