/**
 * Blocks as the walk reads them: located through the block index (batched), read from their
 * pack, checked against their CID.
 *
 * Packs up to `wholePackMax` are fetched whole, once, and kept in a byte-bounded LRU: a repo's
 * blocks sit together in the packs of its imports, so one get serves thousands of blocks where
 * ranged gets would cost a request (or an open and a read) each. Larger packs (a repo of a
 * million records imports a 300 MB pack) are read a `packWindow` at a time, the windows kept in
 * the same LRU: a ranged get per block cost the walk of such a repo some 40 µs of CPU a block.
 *
 * A walk reads a repo's blocks in an order unrelated to where they lie in its pack (events, rows
 * and the MST all jump about it), so a cache smaller than the pack misses on a share of the
 * blocks, and each miss is a window fetched and a new buffer, whose bytes push V8 into a full
 * collection every 64 MB: 23–32 µs of CPU per node at a million records, for any window from
 * 64 KiB to 8 MiB, against 8.5 µs with the pack held whole. So the cache grows past
 * `packCacheBytes` by the size of the largest pack read by windows, up to `largePackCacheBytes`:
 * a repo of some three million records or more still misses.
 * Through a multiplexed store a whole-pack get returns a copy that verified against the pack's
 * key; a ranged read is not verified, which is why every block is hashed here regardless.
 */
import { hash } from 'node:crypto';
import type pg from 'pg';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { PackNotFoundError } from '../storage/pack-errors.ts';
import { cidToString } from '../atproto/cid.ts';
import { Batcher } from './batch.ts';
import { PackObjectMissingError, PackRowMissingError } from './errors.ts';
import type { BlockLoc } from './nodes.ts';
import { LOC_SQL, fromWire, onWire, readLocs } from './packed.ts';

export interface BlockSourceOptions {
  /** Packs up to this many bytes are read whole and cached. Default 64 MiB. */
  wholePackMax?: number;
  /** Bytes of whole packs kept at once. Default 256 MiB. */
  packCacheBytes?: number;
  /** Larger packs are read in aligned windows of this many bytes, cached with the whole packs. Default 1 MiB. */
  packWindow?: number;
  /** The cache grows past `packCacheBytes` by the size of the largest pack read by windows, up to this. Default 1 GiB. */
  largePackCacheBytes?: number;
  /** Most CIDs per block index query. Default 5000. */
  maxBatch?: number;
  /**
   * Count the references to each block looked up one by one, in the same statement (`refs` of
   * its location): such a block lies outside the packs its root read in bulk, whose refcounts
   * were compared there, and the refcount check would otherwise ask again. Default false.
   */
  countRefs?: boolean;
}

interface LocRow {
  cid: Buffer;
  pack_id: string;
  key: string | null;
  size_bytes: string | null;
  byte_offset: string;
  byte_length: number;
  refcount: string;
  refs?: string;
}

const LOC_COLUMNS = 'b.cid, b.pack_id, p.key, p.size_bytes, b.byte_offset, b.byte_length, b.refcount';

/**
 * The rows that reference a block: record index rows and events (index lookups, migration 0005).
 * Repo heads, the importer's third kind of reference (storage/validate-queries.ts), are not
 * counted here: `repos.head_cid` has no index (one would stop live sync's HOT updates of `repos`,
 * migration 0008), so counting them scanned `repos` whole once per lookup statement, a cost that
 * grew with the mirror (issue 13: a walk whose blocks are all looked up, 10,000 → 100,000 repos,
 * PostgreSQL 13.3 → 24.4 µs a node; 11.1 → 9.2 without). A block only a head names, or one whose rows fall short of
 * its refcount, is counted again mirror-wide by the refcount check (`BlockLoc.refs`).
 */
const REFS_SQL = `(SELECT count(*) FROM records x WHERE x.cid = b.cid) + (SELECT count(*) FROM events x WHERE x.cid = b.cid) AS refs`;

export function toLoc(r: Omit<LocRow, 'cid'>): BlockLoc {
  return {
    packId: Number(r.pack_id),
    packKey: r.key,
    packSize: r.size_bytes === null ? 0 : Number(r.size_bytes),
    offset: Number(r.byte_offset),
    length: r.byte_length,
    refcount: Number(r.refcount),
    ...(r.refs !== undefined ? { refs: Number(r.refs) } : {}),
  };
}

/** A Map key for a CID's bytes, made without copying (one char per byte). */
export function cidMapKey(cid: Uint8Array): string {
  return Buffer.from(cid.buffer, cid.byteOffset, cid.byteLength).toString('latin1');
}

/**
 * Four bytes of a CID's digest (bytes 4..7) as a number: a Set of these says at once, without a
 * key string made, that a CID is not among a few (`RefcountScan`).
 */
export function cidWord(cid: Uint8Array): number {
  return ((cid[4]! << 24) | (cid[5]! << 16) | (cid[6]! << 8) | cid[7]!) >>> 0;
}

/** `cidWord` of the CID whose `cidMapKey` is `key`. */
export function keyWord(key: string): number {
  return ((key.charCodeAt(4) << 24) | (key.charCodeAt(5) << 16) | (key.charCodeAt(6) << 8) | key.charCodeAt(7)) >>> 0;
}

/** Whether `bytes` hash to the SHA-256 digest inside the 36-byte `cid`. */
export function blockHashMatches(cid: Uint8Array, bytes: Uint8Array): boolean {
  // The digest as a one-byte string ('binary' is latin1: a char per byte). A Buffer would cost
  // an ArrayBuffer per block, which made the hash of a small block twice as dear (1.8 µs, 0.85).
  const digest = hash('sha256', bytes, 'binary');
  for (let i = 0; i < 32; i++) if (digest.charCodeAt(i) !== cid[4 + i]) return false;
  return true;
}

export class BlockSource {
  readonly #pool: pg.Pool;
  readonly #store: BlobStore;
  readonly #wholePackMax: number;
  readonly #cacheBudget: number;
  readonly #largeBudget: number;
  /** The largest pack read by windows so far: the cache holds it whole, within `#largeBudget`. */
  #largestWindowed = 0;
  readonly #window: number;
  readonly #locator: Batcher<Uint8Array, BlockLoc | null>;
  readonly #countRefs: boolean;
  readonly #packs = new Map<string, Uint8Array>();
  readonly #loading = new Map<string, Promise<Uint8Array | null>>();
  #cached = 0;
  /** Bytes fetched from the blobstore (whole packs and ranges). */
  bytesFetched = 0;
  /** Blobstore requests made for blocks. */
  requests = 0;

  constructor(pool: pg.Pool, store: BlobStore, opts: BlockSourceOptions = {}) {
    this.#pool = pool;
    this.#store = store;
    this.#wholePackMax = opts.wholePackMax ?? 64 * 1024 * 1024;
    this.#cacheBudget = opts.packCacheBytes ?? 256 * 1024 * 1024;
    this.#window = Math.max(1, opts.packWindow ?? 1024 * 1024);
    this.#largeBudget = opts.largePackCacheBytes ?? 1024 * 1024 * 1024;
    this.#countRefs = opts.countRefs ?? false;
    // One batch in flight: the lookups of every open root go together.
    this.#locator = new Batcher((cids) => this.locateMany(cids), { maxBatch: opts.maxBatch ?? 5000, serial: true });
  }

  get store(): BlobStore {
    return this.#store;
  }

  /** Where the block index says `cid` is, or null; concurrent calls share one query. */
  locate(cid: Uint8Array): Promise<BlockLoc | null> {
    return this.#locator.load(cid);
  }

  /** Locations of `cids` in one query, in order (null for a CID not indexed). */
  async locateMany(cids: Uint8Array[]): Promise<(BlockLoc | null)[]> {
    const { rows } = await this.#pool.query<LocRow>(
      this.#countRefs
        ? `SELECT ${LOC_COLUMNS}, ${REFS_SQL} FROM blocks b LEFT JOIN packs p ON p.id = b.pack_id WHERE b.cid = ANY($1::bytea[])`
        : `SELECT ${LOC_COLUMNS} FROM blocks b LEFT JOIN packs p ON p.id = b.pack_id WHERE b.cid = ANY($1::bytea[])`,
      [cids],
    );
    const found = new Map<string, BlockLoc>();
    for (const r of rows) found.set(cidMapKey(r.cid), toLoc(r));
    return cids.map((c) => found.get(cidMapKey(c)) ?? null);
  }

  /** Every block index row of the given packs, in pack order: `[cid, location]` pairs (Pack steps). */
  async packIndex(packIds: number[]): Promise<[Uint8Array, BlockLoc][]> {
    if (packIds.length === 0) return [];
    const { rows } = await this.#pool.query<{ pack_id: string; key: string | null; size_bytes: string | null; packed: string }>(
      `SELECT b.pack_id, p.key, p.size_bytes, ${onWire(`string_agg(${LOC_SQL}, ''::bytea ORDER BY b.byte_offset)`)} AS packed
       FROM blocks b LEFT JOIN packs p ON p.id = b.pack_id
       WHERE b.pack_id = ANY($1::bigint[]) GROUP BY b.pack_id, p.key, p.size_bytes ORDER BY b.pack_id`,
      [packIds],
    );
    return rows.flatMap((g) => readLocs(fromWire(g.packed), { id: Number(g.pack_id), key: g.key, size: Number(g.size_bytes ?? 0) }));
  }

  /**
   * The bytes of block `cid` at `loc`, not yet checked against the CID (see
   * `blockHashMatches`: a mismatch is a finding for the caller, not a load failure).
   *
   * @throws {PackRowMissingError} when the index row names no pack.
   * @throws {PackObjectMissingError} when the blobstore has no such pack.
   * @throws whatever the blobstore throws (a range past the pack's end, an unreachable store).
   */
  async read(cid: Uint8Array, loc: BlockLoc): Promise<Uint8Array> {
    const key = loc.packKey;
    if (key === null) throw new PackRowMissingError(cidToString(cid, 0), loc.packId);
    if (loc.packSize > 0 && loc.packSize <= this.#wholePackMax) {
      const pack = await this.#wholePack(key);
      if (pack === null) throw new PackObjectMissingError(key, cidToString(cid, 0));
      if (loc.offset + loc.length <= pack.length) return pack.subarray(loc.offset, loc.offset + loc.length);
      // A pack shorter than the index says: let the ranged read report it the store's way.
    } else if (loc.packSize > 0) {
      const w = this.#windowOf(loc);
      if (w) {
        if (loc.packSize > this.#largestWindowed) this.#largestWindowed = loc.packSize;
        const bytes = await this.#cachedGet(w.cacheKey, () => this.#store.getRange(key, w.start, w.length)).catch(() => null);
        if (bytes && loc.offset + loc.length <= w.start + bytes.length) return bytes.subarray(loc.offset - w.start, loc.offset - w.start + loc.length);
        // Missing, short or failed: the block's own ranged read reports it the store's way.
      }
    }
    let bytes: Uint8Array | null;
    try {
      this.requests++;
      bytes = await this.#store.getRange(key, loc.offset, loc.length);
    } catch (err) {
      if (err instanceof PackNotFoundError) bytes = null;
      else throw err;
    }
    if (bytes === null) throw new PackObjectMissingError(key, cidToString(cid, 0));
    this.bytesFetched += bytes.length;
    return bytes;
  }

  /**
   * The bytes at `loc` when its pack is already in the cache (no I/O); undefined otherwise. Not
   * checked against the CID, like `read`.
   */
  readCached(loc: BlockLoc): Uint8Array | undefined {
    const key = loc.packKey;
    if (key === null) return undefined;
    if (loc.packSize > this.#wholePackMax) {
      const w = this.#windowOf(loc);
      const bytes = w && this.#packs.get(w.cacheKey);
      if (!w || !bytes || loc.offset + loc.length > w.start + bytes.length) return undefined;
      return bytes.subarray(loc.offset - w.start, loc.offset - w.start + loc.length);
    }
    const pack = this.#packs.get(key);
    if (!pack || loc.offset + loc.length > pack.length) return undefined;
    return pack.subarray(loc.offset, loc.offset + loc.length);
  }

  /** The window of a large pack that holds the block at `loc`; undefined when the block crosses a window's end. */
  #windowOf(loc: BlockLoc): { cacheKey: string; start: number; length: number } | undefined {
    const start = loc.offset - (loc.offset % this.#window);
    if (loc.offset + loc.length > start + this.#window) return undefined;
    return { cacheKey: `${loc.packKey} ${start}`, start, length: Math.max(0, Math.min(this.#window, loc.packSize - start)) };
  }

  #wholePack(key: string): Promise<Uint8Array | null> {
    return this.#cachedGet(key, () => this.#store.get(key));
  }

  /** The bytes cached under `key`, fetched once by `get` (concurrent callers share the fetch). */
  async #cachedGet(key: string, get: () => Promise<Uint8Array | null>): Promise<Uint8Array | null> {
    const hit = this.#packs.get(key);
    if (hit) {
      // Touch: Map order is the LRU order.
      this.#packs.delete(key);
      this.#packs.set(key, hit);
      return hit;
    }
    let loading = this.#loading.get(key);
    if (!loading) {
      this.requests++;
      loading = get().then((bytes) => {
        if (bytes !== null) {
          this.bytesFetched += bytes.length;
          this.#remember(key, bytes);
        }
        return bytes;
      });
      loading.finally(() => this.#loading.delete(key)).catch(() => {});
      this.#loading.set(key, loading);
    }
    return loading;
  }

  #remember(key: string, bytes: Uint8Array): void {
    this.#packs.set(key, bytes);
    this.#cached += bytes.length;
    for (const [k, v] of this.#packs) {
      if (this.#cached <= this.#cacheBudget + Math.min(this.#largeBudget, this.#largestWindowed) || k === key) break;
      this.#packs.delete(k);
      this.#cached -= v.length;
    }
  }
}
