/**
 * Blocks for one request, read from packs the way a CAR is assembled fastest: a pack up to
 * `wholePackMax` is read whole, once, and every block in it becomes addressable by CID without
 * asking the block index again. A repo's blocks sit together in the packs of its imports, so a
 * getRepo usually costs one index lookup (the commit) and one get per pack; blocks the loaded
 * packs do not hold are located through the index in one batched query per call, and those in
 * packs too large to read whole are read by ranges, adjacent ranges coalesced into one get.
 *
 * Every block handed out is checked against its CID (SHA-256), whichever way it was read.
 */
import type pg from 'pg';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { PackNotFoundError } from '../storage/pack-errors.ts';
import { cidToString } from '../atproto/cid.ts';
import { blockHashMatches, cidMapKey } from '../graph/blocks.ts';

export interface PackBlockReaderOptions {
  /** Packs up to this size are read whole. Default 128 MiB. */
  wholePackMax?: number;
  /** Bytes of whole packs one reader may hold; past it, blocks are read by ranges. Default 512 MiB. */
  budgetBytes?: number;
  /** Ranges closer than this are fetched as one get. Default 64 KiB. */
  coalesceGap?: number;
}

/** A block the mirror should hold is not in the block index, or not where the index says. */
export class MissingBlockError extends Error {
  override name = 'MissingBlockError';
}

interface Loc {
  key: string;
  size: number;
  offset: number;
  length: number;
}

export class PackBlockReader {
  readonly #pool: pg.Pool;
  readonly #store: BlobStore;
  readonly #wholePackMax: number;
  readonly #budget: number;
  readonly #gap: number;
  readonly #known = new Map<string, Uint8Array>();
  readonly #loadedPacks = new Set<string>();
  #held = 0;
  /** Bytes read from the blobstore. */
  bytesRead = 0;
  /** Blobstore gets and block index queries made. */
  gets = 0;
  indexQueries = 0;

  constructor(pool: pg.Pool, store: BlobStore, opts: PackBlockReaderOptions = {}) {
    this.#pool = pool;
    this.#store = store;
    this.#wholePackMax = opts.wholePackMax ?? 128 * 1024 * 1024;
    this.#budget = opts.budgetBytes ?? 512 * 1024 * 1024;
    this.#gap = opts.coalesceGap ?? 64 * 1024;
  }

  /**
   * The bytes of each CID, in order, each checked against its CID.
   *
   * @throws {MissingBlockError} naming the first CID that is not indexed, whose pack is gone, or
   *   whose bytes do not hash to it.
   */
  async getMany(cids: Uint8Array[]): Promise<Uint8Array[]> {
    const out: (Uint8Array | undefined)[] = new Array(cids.length);
    let missing: number[] = [];
    for (let i = 0; i < cids.length; i++) {
      const hit = this.#known.get(cidMapKey(cids[i]!));
      if (hit) out[i] = hit;
      else missing.push(i);
    }
    if (missing.length > 0) {
      const locs = await this.#locate(missing.map((i) => cids[i]!));
      const ranged: { i: number; loc: Loc }[] = [];
      // Whole packs first: one of them may hold other missing blocks too.
      for (const [j, i] of missing.entries()) {
        const loc = locs[j];
        if (!loc) throw new MissingBlockError(`block ${cidToString(cids[i]!, 0)} is not in the block index`);
        if (!this.#loadedPacks.has(loc.key) && loc.size <= this.#wholePackMax && this.#held + loc.size <= this.#budget) {
          await this.#loadWhole(loc.key);
        }
        const hit = this.#known.get(cidMapKey(cids[i]!));
        if (hit) out[i] = hit;
        else ranged.push({ i, loc });
      }
      await this.#readRanges(ranged, cids, out);
      missing = [];
    }
    for (let i = 0; i < cids.length; i++) {
      if (!blockHashMatches(cids[i]!, out[i]!)) throw new MissingBlockError(`block ${cidToString(cids[i]!, 0)} read from its pack does not hash to its CID`);
    }
    return out as Uint8Array[];
  }

  async #locate(cids: Uint8Array[]): Promise<(Loc | undefined)[]> {
    const found = new Map<string, Loc>();
    for (let at = 0; at < cids.length; at += 10_000) {
      const batch = cids.slice(at, at + 10_000);
      this.indexQueries++;
      const { rows } = await this.#pool.query<{ cid: Buffer; key: string | null; size_bytes: string | null; byte_offset: string; byte_length: number }>(
        `SELECT b.cid, p.key, p.size_bytes, b.byte_offset, b.byte_length
         FROM blocks b LEFT JOIN packs p ON p.id = b.pack_id WHERE b.cid = ANY($1::bytea[])`,
        [batch],
      );
      for (const r of rows) {
        if (r.key === null) continue;
        found.set(cidMapKey(r.cid), { key: r.key, size: Number(r.size_bytes), offset: Number(r.byte_offset), length: r.byte_length });
      }
    }
    return cids.map((c) => found.get(cidMapKey(c)));
  }

  async #loadWhole(key: string): Promise<void> {
    this.gets++;
    const bytes = await this.#store.get(key);
    if (bytes === null) throw new MissingBlockError(`pack ${key} is not in the blobstore`);
    this.bytesRead += bytes.length;
    this.#loadedPacks.add(key);
    this.#held += bytes.length;
    indexPackBytes(bytes, this.#known);
  }

  async #readRanges(wanted: { i: number; loc: Loc }[], cids: Uint8Array[], out: (Uint8Array | undefined)[]): Promise<void> {
    wanted.sort((a, b) => (a.loc.key < b.loc.key ? -1 : a.loc.key > b.loc.key ? 1 : a.loc.offset - b.loc.offset));
    let s = 0;
    while (s < wanted.length) {
      const first = wanted[s]!.loc;
      let end = first.offset + first.length;
      let e = s + 1;
      while (e < wanted.length && wanted[e]!.loc.key === first.key && wanted[e]!.loc.offset - end <= this.#gap) {
        end = Math.max(end, wanted[e]!.loc.offset + wanted[e]!.loc.length);
        e++;
      }
      this.gets++;
      let bytes: Uint8Array | null;
      try {
        bytes = await this.#store.getRange(first.key, first.offset, end - first.offset);
      } catch (err) {
        if (err instanceof PackNotFoundError) bytes = null;
        else throw err;
      }
      if (bytes === null) throw new MissingBlockError(`pack ${first.key} is not in the blobstore`);
      this.bytesRead += bytes.length;
      for (let k = s; k < e; k++) {
        const { i, loc } = wanted[k]!;
        const block = bytes.subarray(loc.offset - first.offset, loc.offset - first.offset + loc.length);
        out[i] = block;
        this.#known.set(cidMapKey(cids[i]!), block);
      }
      s = e;
    }
  }
}

/**
 * Adds every block of a pack (CARv1: varint-framed header, then varint(len) CID data) to `into`
 * as a view into `bytes`. Only 36-byte CIDv1 SHA-256 CIDs are indexed, the only kind packs hold;
 * a frame that does not parse ends the scan, and the blocks after it are found by the index.
 */
export function indexPackBytes(bytes: Uint8Array, into: Map<string, Uint8Array>): number {
  let pos = 0;
  const readVarint = (): number => {
    let n = 0;
    let mul = 1;
    for (;;) {
      const b = bytes[pos++];
      if (b === undefined) return -1;
      n += (b & 0x7f) * mul;
      if (b < 0x80) return n;
      mul *= 0x80;
      if (mul > 2 ** 49) return -1;
    }
  };
  const headerLength = readVarint();
  if (headerLength < 0) return 0;
  pos += headerLength;
  let count = 0;
  while (pos < bytes.length) {
    const len = readVarint();
    if (len < 36 || pos + len > bytes.length) break;
    if (bytes[pos] === 1 && bytes[pos + 2] === 0x12 && bytes[pos + 3] === 0x20) {
      const key = Buffer.from(bytes.buffer, bytes.byteOffset + pos, 36).toString('latin1');
      if (!into.has(key)) into.set(key, bytes.subarray(pos + 36, pos + len));
      count++;
    }
    pos += len;
  }
  return count;
}
