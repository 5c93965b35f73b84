/**
 * The records of a verified repository, held compactly: every key in one byte arena, and per
 * record a few integers (where its key ends, where its rkey starts, its collection, its block in
 * the `BlockMap`).
 *
 * An object per record — a path, an rkey and a CID string — cost about 250 bytes of heap each,
 * most of a large repo's memory beyond its CAR bytes, and the survivors of every young-generation
 * collection made V8 grow its new space to 64 MB. Here a record costs its key bytes and 16 bytes.
 * Strings and objects are made when asked for, one record at a time (`pathAt`, `cidAt`, the
 * iterator), so a caller that streams the records keeps none of them.
 */
import type { BlockMap } from './block-map.ts';
import { latin1 } from './cid.ts';

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
  // Per record: end of its key in #keys (it starts where the previous one ends), the rkey's
  // offset within the key, its collection (index into #collections), its block index.
  #keyEnd: Uint32Array;
  #rkeyAt: Uint16Array;
  #collection: Uint32Array;
  #block: Int32Array;
  readonly #collections: string[] = [];
  #length = 0;

  constructor(blocks: BlockMap) {
    this.blocks = blocks;
    // The first arrays share one allocation (each its own would be a backing store apiece,
    // for every repo verified); growing replaces them one by one.
    const n = FIRST_RECORDS;
    const memory = new ArrayBuffer(14 * n + FIRST_KEY_BYTES);
    this.#keyEnd = new Uint32Array(memory, 0, n);
    this.#collection = new Uint32Array(memory, 4 * n, n);
    this.#block = new Int32Array(memory, 8 * n, n);
    this.#rkeyAt = new Uint16Array(memory, 12 * n, n);
    this.#keys = new Uint8Array(memory, 14 * n, FIRST_KEY_BYTES);
  }

  get length(): number {
    return this.#length;
  }

  /** Bytes of every key, written out in full. */
  get keyBytes(): number {
    return this.#keysLength;
  }

  /**
   * Appends a record whose key is `path`, a valid `collection/rkey` path (ASCII: one byte per
   * char, at most 1024), under `collection`, its prefix. Records come in key order, so a
   * collection's records are consecutive and its string is kept once.
   */
  pushPath(path: string, collection: string, block: number): void {
    const at = this.#reserve(path.length);
    const keys = this.#keys;
    for (let i = 0; i < path.length; i++) keys[at + i] = path.charCodeAt(i);
    this.#append(path.length, collection.length, collection, block);
  }

  /** Makes room for a key of `length` bytes; returns where it goes. */
  #reserve(length: number): number {
    if (this.#length === this.#keyEnd.length) this.#grow();
    if (this.#keysLength + length > this.#keys.length) {
      const keys = new Uint8Array(Math.max(this.#keys.length * 2, this.#keysLength + length));
      keys.set(this.#keys.subarray(0, this.#keysLength));
      this.#keys = keys;
    }
    return this.#keysLength;
  }

  #append(keyLength: number, slash: number, collection: string, block: number): void {
    const i = this.#length;
    this.#keysLength += keyLength;
    this.#keyEnd[i] = this.#keysLength;
    this.#rkeyAt[i] = slash + 1;
    const collections = this.#collections;
    if (collections[collections.length - 1] !== collection) collections.push(collection);
    this.#collection[i] = collections.length - 1;
    this.#block[i] = block;
    this.#length = i + 1;
  }

  #keyStart(i: number): number {
    return i === 0 ? 0 : this.#keyEnd[i - 1]!;
  }

  /** `collection/rkey`. */
  pathAt(i: number): string {
    return latin1(this.#keys, this.#keyStart(i), this.#keyEnd[i]!);
  }

  collectionAt(i: number): string {
    return this.#collections[this.#collection[i]!]!;
  }

  rkeyAt(i: number): string {
    return latin1(this.#keys, this.#keyStart(i) + this.#rkeyAt[i]!, this.#keyEnd[i]!);
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

  /** Renumbers block indexes after `BlockMap.retain`: `renumber[old]` is the new index. */
  renumberBlocks(renumber: Int32Array): void {
    for (let i = 0; i < this.#length; i++) this.#block[i] = renumber[this.#block[i]!]!;
  }

  #grow(): void {
    const n = this.#keyEnd.length * 2;
    const keyEnd = new Uint32Array(n);
    keyEnd.set(this.#keyEnd);
    const rkeyAt = new Uint16Array(n);
    rkeyAt.set(this.#rkeyAt);
    const collection = new Uint32Array(n);
    collection.set(this.#collection);
    const block = new Int32Array(n);
    block.set(this.#block);
    this.#keyEnd = keyEnd;
    this.#rkeyAt = rkeyAt;
    this.#collection = collection;
    this.#block = block;
  }
}
