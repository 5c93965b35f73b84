/**
 * Blocks for one request, read from packs the way a CAR is assembled fastest: a pack up to
 * `wholePackMax` is read whole, once, and every block in it becomes addressable by CID without
 * asking the block index again. A repo's blocks sit together in the packs of its imports, so a
 * getRepo usually costs one index lookup (the commit) and one get per pack; blocks the loaded
 * packs do not hold are located through the index in one batched query per call, and those in
 * packs too large to read whole are read by ranges, adjacent ranges coalesced into one get.
 *
 * Every block handed out is checked: a whole pack against the SHA-256 its key is derived from
 * (one hash of the pack instead of one per block; the importer checked every block against its
 * CID before it wrote the pack), a block read by range against its CID.
 */
import type pg from 'pg';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { PackNotFoundError } from '../storage/pack-errors.ts';
import { cidToString } from '../atproto/cid.ts';
import { blockHashMatches } from '../graph/blocks.ts';
import { BlockMap } from '../atproto/block-map.ts';
import { hash } from 'node:crypto';

export interface PackBlockReaderOptions {
  /** Packs up to this size are read whole. Default 128 MiB. */
  wholePackMax?: number;
  /** Bytes of whole packs one reader may hold; past it, blocks are read by ranges. Default 512 MiB. */
  budgetBytes?: number;
  /** Ranges closer than this are fetched as one get. Default 64 KiB. */
  coalesceGap?: number;
  /** Whole packs already read and checked, shared with other readers. */
  cache?: PackCache;
}

/**
 * Whole packs read and checked against their keys, shared by the requests of one server (LRU,
 * bounded in bytes). A pack's key is its hash, so bytes checked once stay right while held in
 * memory: a repo in a batch's pack shared with hundreds of others, or asked for again, costs
 * no blobstore read and no hash. Beside a pack, the index of its blocks by CID once a reader
 * has built it (counted in the budget), so the next reader copies it instead of parsing the
 * pack again.
 */
export class PackCache {
  readonly #packs = new Map<string, { bytes: Uint8Array; index?: BlockMap }>();
  #bytes = 0;
  readonly budgetBytes: number;
  /**
   * Smallest pack whose block index is kept (default 1 MiB): an index costs at least ~44 KB
   * (its initial table), and a small pack is parsed again in well under a millisecond.
   */
  readonly keepIndexMin: number;

  constructor(budgetBytes: number, opts: { keepIndexMin?: number } = {}) {
    this.budgetBytes = budgetBytes;
    this.keepIndexMin = opts.keepIndexMin ?? 1024 * 1024;
  }

  get bytes(): number {
    return this.#bytes;
  }

  has(key: string): boolean {
    return this.#packs.has(key);
  }

  get(key: string): Uint8Array | undefined {
    return this.#touch(key)?.bytes;
  }

  /**
   * Bytes [start, end) of a pack when held: from the whole pack, or a range kept by
   * {@link setRange}. Checked when they were kept.
   */
  range(key: string, start: number, end: number): Uint8Array | undefined {
    const whole = this.#packs.has(key) ? this.get(key) : undefined;
    if (whole) return end <= whole.length ? whole.subarray(start, end) : undefined;
    return this.get(rangeKey(key, start, end));
  }

  /** Keeps a range of a pack (checked by the caller, e.g. against a plan's CRC), in the same budget. */
  setRange(key: string, start: number, bytes: Uint8Array): void {
    this.set(rangeKey(key, start, start + bytes.length), bytes);
  }

  /** The index of the pack's blocks (views of the cached bytes), when a reader left one. */
  index(key: string): BlockMap | undefined {
    return this.#touch(key)?.index;
  }

  #touch(key: string): { bytes: Uint8Array; index?: BlockMap } | undefined {
    const entry = this.#packs.get(key);
    if (entry) {
      this.#packs.delete(key);
      this.#packs.set(key, entry);
    }
    return entry;
  }

  /** Keeps `bytes` (checked against `key` by the caller) unless it alone is over the budget. */
  set(key: string, bytes: Uint8Array): void {
    if (bytes.length > this.budgetBytes || this.#packs.has(key)) return;
    this.#packs.set(key, { bytes });
    this.#bytes += bytes.length;
    this.#evict();
  }

  /**
   * Keeps the index of a held pack: `index` must hold exactly the pack's blocks, as views of
   * the bytes held under `key`, and no one may add to it once kept. True when kept (the pack
   * is held, has no index yet, and is at least `keepIndexMin` bytes).
   */
  setIndex(key: string, index: BlockMap): boolean {
    const entry = this.#packs.get(key);
    if (!entry || entry.index || entry.bytes.length < this.keepIndexMin) return false;
    entry.index = index;
    this.#bytes += index.indexBytes;
    this.#evict();
    return true;
  }

  #evict(): void {
    for (const [k, v] of this.#packs) {
      if (this.#bytes <= this.budgetBytes) break;
      this.#packs.delete(k);
      this.#bytes -= v.bytes.length + (v.index?.indexBytes ?? 0);
    }
  }
}

/** A pack key never holds `#`: ranges are kept beside whole packs under keys that cannot clash. */
const rangeKey = (key: string, start: number, end: number) => `${key}#${start}-${end}`;

/** A block the mirror should hold is not in the block index, or not where the index says. */
export class MissingBlockError extends Error {
  override name = 'MissingBlockError';
}

interface Loc {
  key: string;
  size: number;
  /** Blocks the pack holds (an upper bound on those this reader will index from it). */
  blockCount: number;
  offset: number;
  length: number;
}

export class PackBlockReader {
  readonly #pool: pg.Pool;
  readonly #store: BlobStore;
  readonly #wholePackMax: number;
  readonly #budget: number;
  readonly #gap: number;
  readonly #cache: PackCache | undefined;
  #rangedBytes = 0;
  // Every block read so far (whole packs and ranges), all already checked; indexed by CID bytes
  // without making a string per block.
  #known = new BlockMap();
  // True while #known is the pack cache's index of a pack (read only): cloned before any add.
  #knownShared = false;
  readonly #loadedPacks = new Set<string>();
  readonly #packBuffers = new WeakMap<Uint8Array, string>();
  #held = 0;
  /** Bytes read from the blobstore. */
  bytesRead = 0;
  /** Blobstore gets and block index queries made. */
  gets = 0;
  indexQueries = 0;
  /** Whole packs whose blocks this reader parsed and indexed (not copied from the cache). */
  packsIndexed = 0;

  constructor(pool: pg.Pool, store: BlobStore, opts: PackBlockReaderOptions = {}) {
    this.#pool = pool;
    this.#store = store;
    this.#wholePackMax = opts.wholePackMax ?? 128 * 1024 * 1024;
    this.#budget = opts.budgetBytes ?? 512 * 1024 * 1024;
    this.#gap = opts.coalesceGap ?? 64 * 1024;
    this.#cache = opts.cache;
  }

  /**
   * Every block read so far, each checked. A different object after a {@link resolve} that
   * read blocks: a caller that keeps it takes it again after each one.
   */
  get blocks(): BlockMap {
    return this.#known;
  }

  /** The reader's own block map: a copy of the cached index it was using, if it was. */
  #writable(): BlockMap {
    if (this.#knownShared) {
      this.#known = this.#known.clone();
      this.#knownShared = false;
    }
    return this.#known;
  }

  /** True when `buffer` is a whole pack: its blocks sit in it framed as a CAR's are. */
  isPack(buffer: Uint8Array): boolean {
    return this.#packBuffers.has(buffer);
  }

  /** The blobstore key of a whole pack this reader read. */
  packKeyOf(buffer: Uint8Array): string | undefined {
    return this.#packBuffers.get(buffer);
  }

  /** Bytes [start, end) of a pack when the pack cache holds them (checked when kept). */
  heldRange(key: string, start: number, end: number): Uint8Array | undefined {
    return this.#cache?.range(key, start, end);
  }

  /**
   * Bytes [start, end) of a pack: held ones (`checked`), or one ranged get, which the caller
   * checks. Null when the pack or the range cannot be read (the caller takes the path that
   * reports why).
   */
  async readRange(key: string, start: number, end: number): Promise<{ bytes: Uint8Array; checked: boolean } | null> {
    const held = this.heldRange(key, start, end);
    if (held) return { bytes: held, checked: true };
    this.gets++;
    try {
      const bytes = await this.#store.getRange(key, start, end - start);
      if (bytes === null) return null;
      this.bytesRead += bytes.length;
      return { bytes, checked: false };
    } catch {
      return null;
    }
  }

  /**
   * Bytes [start, start + target.length) of a pack read into `target` (the caller's buffer,
   * which the caller checks). False when the pack or the range cannot be read.
   */
  async readRangeInto(key: string, start: number, target: Uint8Array): Promise<boolean> {
    this.gets++;
    try {
      if (!(await this.#store.readInto(key, start, target))) return false;
      this.bytesRead += target.length;
      return true;
    } catch {
      return false;
    }
  }

  /** Keeps a range the caller checked for the next request (when the reader has a pack cache). */
  keepRange(key: string, start: number, bytes: Uint8Array): void {
    this.#cache?.setRange(key, start, bytes);
  }

  /**
   * A whole pack's bytes, checked against its content key, without indexing its blocks (a
   * caller that knows which ranges it wants). Null when the pack is gone, damaged, or not
   * named by its hash: the caller then takes the path that reports why.
   */
  async wholePack(key: string): Promise<Uint8Array | null> {
    const named = /^packs\/[0-9a-f]{2}\/([0-9a-f]{64})\.car$/.exec(key)?.[1];
    if (named === undefined) return null;
    const held = this.#cache?.get(key);
    if (held) return held;
    this.gets++;
    const bytes = await this.#store.get(key);
    if (bytes === null) return null;
    this.bytesRead += bytes.length;
    if (hash('sha256', bytes, 'hex') !== named) return null;
    this.#cache?.set(key, bytes);
    return bytes;
  }

  /**
   * The bytes of each CID (36-byte binary CIDs, views are fine), in order, each checked.
   *
   * @throws {MissingBlockError} naming the first CID that is not indexed, whose pack is gone, or
   *   whose bytes do not hash to what they should.
   */
  async getMany(cids: Uint8Array[]): Promise<Uint8Array[]> {
    const at = await this.resolve(cids);
    const out: Uint8Array[] = new Array(cids.length);
    for (let i = 0; i < cids.length; i++) out[i] = this.#known.dataAt(at[i]!);
    return out;
  }

  /**
   * The index in {@link blocks} of each CID, reading what is not held yet; every block it
   * indexes has been checked.
   *
   * @throws {MissingBlockError} as {@link getMany}; with `lenient`, a block that cannot be
   *   read (not indexed, its pack gone, its bytes wrong) is -1 instead, and the others are
   *   still read (the event stream sends such an event without its record).
   */
  async resolve(cids: Uint8Array[], lenient = false): Promise<Int32Array> {
    const out = new Int32Array(cids.length);
    const missing: number[] = [];
    for (let i = 0; i < cids.length; i++) {
      const at = this.#known.indexOf(cids[i]!);
      out[i] = at;
      if (at < 0) missing.push(i);
    }
    if (missing.length === 0) return out;
    const locs = await this.#locate(missing.map((i) => cids[i]!));
    const ranged: { i: number; loc: Loc }[] = [];
    // Whole packs first: one of them may hold other missing blocks too.
    for (const [j, i] of missing.entries()) {
      const loc = locs[j];
      if (!loc) {
        if (lenient) continue;
        throw new MissingBlockError(`block ${cidToString(cids[i]!, 0)} is not in the block index`);
      }
      if (!this.#loadedPacks.has(loc.key)) {
        if (loc.size <= this.#wholePackMax && this.#held + loc.size <= this.#budget) {
          try {
            await this.#loadWhole(loc.key, loc.blockCount);
          } catch (err) {
            // Not read whole: its blocks are tried by range below, and fail there one by one.
            if (!lenient || !(err instanceof MissingBlockError)) throw err;
            this.#loadedPacks.add(loc.key);
          }
        } else {
          // Too large to index for a few blocks, but already in memory and checked: the block
          // is taken from the cached pack where the index says (its CID sits just before it).
          const pack = this.#cache?.get(loc.key);
          if (pack && loc.offset >= 36 && loc.offset + loc.length <= pack.length && sameCid(pack, loc.offset - 36, cids[i]!)) {
            this.#writable().add(pack, loc.offset - 36, loc.offset + loc.length);
          }
        }
      }
      const at = this.#known.indexOf(cids[i]!);
      if (at >= 0) out[i] = at;
      else ranged.push({ i, loc });
    }
    await this.#readRanges(ranged, cids, out, lenient);
    return out;
  }

  /** Bytes held: whole packs, and copies of blocks read by range. */
  get heldBytes(): number {
    return this.#held + this.#rangedBytes;
  }

  async #locate(cids: Uint8Array[]): Promise<(Loc | undefined)[]> {
    const found = new Map<string, Loc>();
    const key = (c: Uint8Array) => Buffer.from(c.buffer, c.byteOffset, c.byteLength).toString('latin1');
    for (let at = 0; at < cids.length; at += 10_000) {
      const batch = cids.slice(at, at + 10_000);
      this.indexQueries++;
      const { rows } = await this.#pool.query<{ cid: Buffer; key: string | null; size_bytes: string | null; block_count: number | null; byte_offset: string; byte_length: number }>(
        `SELECT b.cid, p.key, p.size_bytes, p.block_count, b.byte_offset, b.byte_length
         FROM blocks b LEFT JOIN packs p ON p.id = b.pack_id WHERE b.cid = ANY($1::bytea[])`,
        [batch],
      );
      for (const r of rows) {
        if (r.key === null) continue;
        found.set(key(r.cid), { key: r.key, size: Number(r.size_bytes), blockCount: r.block_count ?? 0, offset: Number(r.byte_offset), length: r.byte_length });
      }
    }
    return cids.map((c) => found.get(key(c)));
  }

  async #loadWhole(key: string, blockCount: number): Promise<void> {
    const named = /^packs\/[0-9a-f]{2}\/([0-9a-f]{64})\.car$/.exec(key)?.[1];
    let bytes = named !== undefined ? this.#cache?.get(key) : undefined;
    if (!bytes) {
      this.gets++;
      const read = await this.#store.get(key);
      if (read === null) throw new MissingBlockError(`pack ${key} is not in the blobstore`);
      this.bytesRead += read.length;
      // One hash of the pack (SHA-NI: about 1.5 GB/s) checks every block in it: the importer
      // checked each against its CID before it wrote the pack under this key.
      if (named !== undefined && hash('sha256', read, 'hex') !== named) throw new MissingBlockError(`pack ${key} does not hash to its key: its copy in the blobstore is damaged`);
      if (named !== undefined) this.#cache?.set(key, read);
      bytes = read;
    }
    this.#loadedPacks.add(key);
    this.#held += bytes.length;
    this.#packBuffers.set(bytes, key);
    // A pack indexed before (by any reader of this server) is used as it is, not parsed again
    // (and copied only if this reader adds to it); the first pack a reader loads is indexed
    // alone, so its index is kept beside the pack for the next.
    const cached = named !== undefined && this.#cache?.get(key) === bytes ? this.#cache.index(key) : undefined;
    if (cached && this.#known.size === 0) {
      this.#known = cached;
      this.#knownShared = true;
      return;
    }
    const alone = this.#known.size === 0;
    const into = this.#writable();
    // The index row's count saves a pass over the pack; a wrong one only costs a rehash.
    into.reserve(Math.min(blockCount, bytes.length / 37));
    indexPackBytes(bytes, into, named === undefined);
    this.packsIndexed++;
    // Kept as it is: from now on this reader copies it before adding to it.
    if (alone && named !== undefined && this.#cache?.setIndex(key, into)) this.#knownShared = true;
  }

  async #readRanges(wanted: { i: number; loc: Loc }[], cids: Uint8Array[], out: Int32Array, lenient: boolean): Promise<void> {
    wanted.sort((a, b) => (a.loc.key < b.loc.key ? -1 : a.loc.key > b.loc.key ? 1 : a.loc.offset - b.loc.offset));
    // Runs of blocks close enough in one pack to read as one range.
    const runs: { s: number; e: number; end: number }[] = [];
    for (let s = 0; s < wanted.length; ) {
      const first = wanted[s]!.loc;
      let end = first.offset + first.length;
      let e = s + 1;
      while (e < wanted.length && wanted[e]!.loc.key === first.key && wanted[e]!.loc.offset - end <= this.#gap) {
        end = Math.max(end, wanted[e]!.loc.offset + wanted[e]!.loc.length);
        e++;
      }
      runs.push({ s, e, end });
      s = e;
    }
    // The ranges are read RANGE_READS at a time (a page of records scattered through a pack is
    // dozens of small reads: one after the other, each waits its turn in the blobstore), and
    // checked and indexed in order.
    const read = async ({ s, end }: { s: number; end: number }): Promise<Uint8Array | null> => {
      const first = wanted[s]!.loc;
      this.gets++;
      try {
        return await this.#store.getRange(first.key, first.offset, end - first.offset);
      } catch (err) {
        if (err instanceof PackNotFoundError) return null;
        throw err;
      }
    };
    for (let r0 = 0; r0 < runs.length; r0 += RANGE_READS) {
      const batch = runs.slice(r0, r0 + RANGE_READS);
      const settled = await Promise.allSettled(batch.map(read));
      for (const [b, result] of settled.entries()) {
        if (result.status === 'rejected') throw result.reason;
        const { s, e } = batch[b]!;
        const first = wanted[s]!.loc;
        const bytes = result.value;
        if (bytes === null) {
          if (lenient) continue;
          throw new MissingBlockError(`pack ${first.key} is not in the blobstore`);
        }
        this.bytesRead += bytes.length;
        for (let k = s; k < e; k++) {
          const { i, loc } = wanted[k]!;
          const data = bytes.subarray(loc.offset - first.offset, loc.offset - first.offset + loc.length);
          if (!blockHashMatches(cids[i]!, data)) {
            if (lenient) continue;
            throw new MissingBlockError(`block ${cidToString(cids[i]!, 0)} read from pack ${loc.key} does not hash to its CID`);
          }
          // Kept as CID + data, the layout the block map indexes.
          const entry = new Uint8Array(36 + data.length);
          this.#rangedBytes += entry.length;
          entry.set(cids[i]!.subarray(0, 36));
          entry.set(data, 36);
          this.#writable().add(entry, 0, entry.length);
          out[i] = this.#known.indexOf(entry);
        }
      }
    }
  }
}

/** Ranged reads one resolve keeps in flight. */
const RANGE_READS = 8;

function sameCid(bytes: Uint8Array, at: number, cid: Uint8Array): boolean {
  for (let k = 0; k < 36; k++) if (bytes[at + k] !== cid[k]) return false;
  return true;
}

/**
 * Adds every block of a pack (CARv1: varint-framed header, then varint(len) CID data) to `into`
 * as a view into `bytes`; with `verify`, only blocks that hash to their CID. Only 36-byte CIDv1
 * SHA-256 CIDs are indexed, the only kind packs hold; a frame that does not parse ends the scan,
 * and the blocks after it are found through the index and read by range.
 */
export function indexPackBytes(bytes: Uint8Array, into: BlockMap, verify: boolean): number {
  let pos = readFrameLength(bytes, 0);
  if (pos < 0) return 0;
  pos = (pos >>> 0) + frameLength;
  let count = 0;
  // The varint reader is inlined by hand: this loop runs once per block of every pack read.
  while (pos < bytes.length) {
    const at = readFrameLength(bytes, pos);
    if (at < 0) break;
    const len = frameLength;
    if (len < 36 || at + len > bytes.length) break;
    if (bytes[at] === 1 && bytes[at + 2] === 0x12 && bytes[at + 3] === 0x20) {
      if (!verify || blockHashMatches(bytes.subarray(at, at + 36), bytes.subarray(at + 36, at + len))) {
        into.add(bytes, at, at + len);
        count++;
      }
    }
    pos = at + len;
  }
  return count;
}

// The length read last by readFrameLength (a module variable, not an object per frame).
let frameLength = 0;

/** Reads the varint at `pos` into `frameLength`; returns where the frame's bytes start, or -1. */
function readFrameLength(bytes: Uint8Array, pos: number): number {
  let n = 0;
  let mul = 1;
  for (;;) {
    const b = bytes[pos++];
    if (b === undefined) return -1;
    n += (b & 0x7f) * mul;
    if (b < 0x80) {
      frameLength = n;
      return pos;
    }
    mul *= 0x80;
    if (mul > 2 ** 49) return -1;
  }
}
