/**
 * Packs: the blocks one import added, written as one CARv1 object under a content-derived key
 * (`packs/<aa>/<sha256>.car`) and indexed in Postgres (`blocks`: CID → pack, offset, length), so
 * that a block is one ranged get and a full-network mirror is not one object per block.
 *
 * Layout (CARv1): varint(len) header, then per block varint(len(cid) + len(data)) cid data.
 * The header is DAG-CBOR `{ version: 1, roots: [] }`: a pack is a bag of blocks, not a DAG with
 * a root, and CAR readers (`@ipld/car`'s CarReader included) accept an empty root list. Index
 * offsets point at a block's data, past its varint and CID, so a ranged read needs no parsing.
 *
 * CIDs here are raw binary CIDv1 with SHA-256 (`Cid.bytes` of @atcute/cid, the bytes a CAR
 * carries), the form stored in `blocks.cid`.
 */
import { createHash } from 'node:crypto';
import { encode as encodeCbor } from '@atcute/cbor';
import { decode as decodeCid, toString as cidToString, type Cid } from '@atcute/cid';
import type { BlobStore, ByteSource } from './blobstore/types.ts';
import type { Queryable } from './db/pool.ts';
import { packKeyOfDigest } from './keys.ts';
import { CID_LENGTH } from '../atproto/cid.ts';
import { BlockHashMismatchError, InvalidBlockCidError, PackNotFoundError } from './pack-errors.ts';

/** Where one block's data sits inside a pack. */
export interface PackEntry {
  cid: Uint8Array;
  offset: number;
  length: number;
}

/** A pack laid out, with its blocks' entries: read from the blocks, never one buffer (see {@link PackLayout}). */
export interface FinishedPack extends ByteSource {
  /** Its blobstore key, the SHA-256 of its bytes. */
  key: string;
  /** One entry per distinct block, in the order they were added. */
  entries: PackEntry[];
}

/** Bytes of a pack's header frame (varint and `{ version: 1, roots: [] }`): where its first block's frame starts. */
export const PACK_HEADER_BYTES = 18;

// Encoded once, with its varint: the header never changes.
const HEADER = encodeCbor({ version: 1, roots: [] });
const HEADER_FRAME = (() => {
  const out = new Uint8Array(varintLength(HEADER.length) + HEADER.length);
  out.set(HEADER, writeVarint(out, 0, HEADER.length));
  if (out.length !== PACK_HEADER_BYTES) throw new Error(`a pack header is ${out.length} bytes, not ${PACK_HEADER_BYTES}`);
  return out;
})();

/**
 * Where layouts hash their bytes: one buffer for all (made on first use), as a layout is made
 * synchronously. A quarter of a MiB: a hash update per piece costs nothing beside its bytes,
 * and the buffer, kept for the process's life, is first made while a large repo is being
 * stored, where each MiB counts against the import's peak.
 */
const HASH_PIECE_BYTES = 256 * 1024;
let hashScratch: Uint8Array | undefined;

/** The shape every CID @atcute/cid accepts (binary CIDv1, DAG-CBOR or raw, SHA-256); checked inline on the hot path. */
function isPackCid(cid: Uint8Array): boolean {
  return cid.length === 36 && cid[0] === 1 && (cid[1] === 0x71 || cid[1] === 0x55) && cid[2] === 0x12 && cid[3] === 32;
}

/**
 * Collects blocks for one pack. Blocks are kept by reference, and the finished pack is read from
 * them whenever it is written: the caller must not modify an added array while the pack is in use.
 */
export class PackWriter {
  readonly #blocks: { cid: Uint8Array; data: Uint8Array }[] = [];
  readonly #seen = new Set<string>();
  #size = HEADER_FRAME.length;
  #finished: FinishedPack | undefined;

  /**
   * Adds a block. The caller has verified that `data` hashes to `cid` (the importer checks
   * every block before anything is stored); the writer only checks that `cid` is well formed.
   * Returns false, and adds nothing, when the pack already holds this CID.
   *
   * @throws {InvalidBlockCidError} when `cid` is not a binary CIDv1 with SHA-256.
   * @throws {Error} after {@link finish}.
   */
  add(cid: Uint8Array, data: Uint8Array): boolean {
    if (this.#finished) throw new Error('PackWriter.add after finish');
    if (!isPackCid(cid)) parseCid(cid); // throws, with the precise reason
    const id = cidId(cid);
    if (this.#seen.has(id)) return false;
    this.#seen.add(id);
    this.#blocks.push({ cid, data });
    const entry = cid.length + data.length;
    this.#size += varintLength(entry) + entry;
    return true;
  }

  /** Distinct blocks added so far. */
  get blockCount(): number {
    return this.#blocks.length;
  }

  /** Size in bytes the pack will have. */
  get byteLength(): number {
    return this.#size;
  }

  /** Lays out the pack. Calling it again returns the same pack; the writer takes no more blocks. */
  finish(): FinishedPack {
    if (this.#finished) return this.#finished;
    const blocks = this.#blocks;
    const layout = new PackLayout(blocks.length, (i) => blocks[i]!.cid, (i) => blocks[i]!.data);
    const entries = blocks.map(({ cid }, i): PackEntry => ({ cid, offset: layout.offsets[i]!, length: layout.lengths[i]! }));
    this.#finished = { key: layout.key, size: layout.size, entries, read: (offset, target) => layout.read(offset, target) };
    return this.#finished;
  }
}

/**
 * Where a layout's blocks lie: per block, its data's memory, offset and length; and, only for a
 * block whose CID does not lie just before its data in the same memory (blocks read from a CAR
 * all do), where its CID lies. With the layout's offsets, 15 bytes a block where every CID lies before
 * its data and the pack is under 4 GiB, as against 30 with every CID's place and 64-bit offsets: a
 * large repo's pack is laid out while its CAR and the block index are held, at the import's peak.
 */
interface BlockTables {
  /** The memory the blocks lie in, each once, as Buffers over the whole of it. */
  memory: Buffer[];
  /** Per block, its data's memory: 16 bits while there are at most 65,536 of them. */
  dataMemory: Uint16Array | Int32Array;
  dataStart: Uint32Array;
  lengths: Int32Array;
  /** 1 where the block's whole frame (varint, CID, data) lies in its data's memory, as blocks read from a CAR do. */
  framed: Uint8Array;
  /** Made at the first block whose CID lies elsewhere; only such blocks have their places here. */
  cids: CidPlaces | undefined;
}

/** Where the CIDs lie of the blocks whose CID does not lie just before their data (`length` 0 for the others). */
interface CidPlaces {
  memory: Int32Array;
  start: Uint32Array;
  length: Uint8Array;
}

/** Asks for each block's CID and data once and notes where they lie. */
function locate(count: number, cidAt: (i: number) => Uint8Array, dataAt: (i: number) => Uint8Array): BlockTables {
  const t: BlockTables = {
    memory: [],
    dataMemory: new Uint16Array(count),
    dataStart: new Uint32Array(count),
    lengths: new Int32Array(count),
    framed: new Uint8Array(count),
    cids: undefined,
  };
  const ids = new Map<ArrayBufferLike, number>();
  let lastBuffer: ArrayBufferLike | undefined;
  let lastId = -1;
  const memoryOf = (view: Uint8Array): number => {
    if (view.buffer === lastBuffer) return lastId;
    lastBuffer = view.buffer;
    let id = ids.get(view.buffer);
    if (id === undefined) {
      id = t.memory.length;
      ids.set(view.buffer, id);
      t.memory.push(Buffer.from(view.buffer as ArrayBuffer));
      // Past 65,536 memories (blocks held apart, one array each), the ids take 32 bits.
      if (id === 0x10000) t.dataMemory = Int32Array.from(t.dataMemory);
    }
    lastId = id;
    return id;
  };
  const varint = new Uint8Array(10);
  for (let i = 0; i < count; i++) {
    const cid = cidAt(i);
    if (!isPackCid(cid)) parseCid(cid);
    const data = dataAt(i);
    // Offsets in the memory are kept in 32 bits: a view further in than 4 GiB is refused.
    if (data.byteOffset + data.length > 0xffffffff || cid.byteOffset > 0xffffffff) throw new RangeError('a pack block lies past 4 GiB into its memory');
    const dataMemory = memoryOf(data);
    t.dataMemory[i] = dataMemory;
    t.dataStart[i] = data.byteOffset;
    t.lengths[i] = data.length;
    // The CID just before the data, in the same memory: its place need not be kept.
    const mem = t.memory[dataMemory]!;
    const at = data.byteOffset - cid.length;
    let before = at >= 0 && cid.length === CID_LENGTH;
    for (let k = cid.length - 1; k >= 0 && before; k--) before = mem[at + k] === cid[k];
    if (!before) {
      const cids = (t.cids ??= { memory: new Int32Array(count), start: new Uint32Array(count), length: new Uint8Array(count) });
      cids.memory[i] = memoryOf(cid);
      cids.start[i] = cid.byteOffset;
      cids.length[i] = cid.length;
      continue;
    }
    // Framed in memory: the frame's varint, too, just before the CID.
    const n = writeVarint(varint, 0, cid.length + data.length);
    if (at - n < 0) continue;
    let same = true;
    for (let k = 0; k < n && same; k++) same = mem[at - n + k] === varint[k];
    if (same) t.framed[i] = 1;
  }
  return t;
}

/**
 * A pack of `count` distinct, verified blocks laid out straight from where they are held
 * (`cidAt(i)`, `dataAt(i)`: views, say, into the CAR the blocks arrived in), with no buffer of
 * the pack's own: its key is hashed from the blocks a MiB at a time, and a blobstore reads its
 * bytes from them the same way ({@link ByteSource}), so that storing a repo never holds a
 * second copy of its blocks.
 *
 * `cidAt` and `dataAt` are asked once per block, here; the layout keeps where each view lies
 * (see BlockTables: 15 bytes a block for blocks read from a CAR, no object) and reads from there, so
 * reading the pack makes no object per block. The bytes there must not change while the layout
 * is used.
 */
export class PackLayout implements ByteSource {
  /** Its blobstore key, the SHA-256 of its bytes. */
  readonly key: string;
  readonly size: number;
  /** Per block, in the order given: the offset of its data in the pack (32 bits when the pack is under 4 GiB). */
  readonly offsets: Uint32Array | Float64Array;
  /** Per block: its data's length. */
  readonly lengths: Int32Array;
  /** The memory the blocks lie in, each once, as Buffers (so `copy` needs no view per block). */
  readonly #memory: Buffer[];
  readonly #dataMemory: Uint16Array | Int32Array;
  readonly #dataStart: Uint32Array;
  /** Where the CIDs lie that do not lie just before their data; undefined when none does. */
  readonly #cids: CidPlaces | undefined;
  /** 1 where the block's whole frame lies in its data's memory, just before the data. */
  readonly #framed: Uint8Array;
  readonly #varint = Buffer.alloc(10);

  /** @throws {InvalidBlockCidError} when a CID is not a binary CIDv1 with SHA-256. */
  constructor(count: number, cidAt: (i: number) => Uint8Array, dataAt: (i: number) => Uint8Array) {
    const t = locate(count, cidAt, dataAt);
    this.#memory = t.memory;
    this.#cids = t.cids;
    this.#dataMemory = t.dataMemory;
    this.#dataStart = t.dataStart;
    this.#framed = t.framed;
    this.lengths = t.lengths;
    // Offsets in 32 bits where the pack is under 4 GiB (every pack a repo's CAR makes): 4 bytes a
    // block less while the pack is held.
    let size = HEADER_FRAME.length;
    for (let i = 0; i < count; i++) {
      const frame = this.#cidLengthOf(i) + t.lengths[i]!;
      size += varintLength(frame) + frame;
    }
    const offsets = size <= 0xffffffff ? new Uint32Array(count) : new Float64Array(count);
    let pos = HEADER_FRAME.length;
    for (let i = 0; i < count; i++) {
      const cidLength = this.#cidLengthOf(i);
      const length = t.lengths[i]!;
      pos += varintLength(cidLength + length) + cidLength;
      offsets[i] = pos;
      pos += length;
    }
    this.offsets = offsets;
    this.size = pos;
    // Hashed a scratch buffer at a time: a hash update per block would cost more than the copy.
    const hash = createHash('sha256');
    const scratch = (hashScratch ??= new Uint8Array(HASH_PIECE_BYTES));
    for (let at = 0; at < pos; at += scratch.length) {
      const part = pos - at < scratch.length ? scratch.subarray(0, pos - at) : scratch;
      this.read(at, part);
      hash.update(part);
    }
    this.key = packKeyOfDigest(hash.digest('hex'));
  }

  /** Block `i`'s CID, a view of where it lies. */
  cidAt(i: number): Uint8Array {
    const m = this.#memory[this.#cidMemoryOf(i)]!;
    return new Uint8Array(m.buffer, this.#cidStartOf(i), this.#cidLengthOf(i));
  }

  // A CID lies just before its data (its length is then that of every CID a pack takes), or
  // where `#cids` says.
  #cidLengthOf(i: number): number {
    const cids = this.#cids;
    return cids === undefined || cids.length[i] === 0 ? CID_LENGTH : cids.length[i]!;
  }

  #cidMemoryOf(i: number): number {
    const cids = this.#cids;
    return cids === undefined || cids.length[i] === 0 ? this.#dataMemory[i]! : cids.memory[i]!;
  }

  #cidStartOf(i: number): number {
    const cids = this.#cids;
    return cids === undefined || cids.length[i] === 0 ? this.#dataStart[i]! - CID_LENGTH : cids.start[i]!;
  }

  /** The first block (in the order given) whose CID is `cid`, or -1. */
  indexOf(cid: Uint8Array): number {
    const last = cid.length - 1;
    outer: for (let i = 0; i < this.offsets.length; i++) {
      if (this.#cidLengthOf(i) !== cid.length) continue;
      const m = this.#memory[this.#cidMemoryOf(i)]!;
      const at = this.#cidStartOf(i);
      // From the digest's end: different CIDs nearly always differ in their last byte.
      for (let k = last; k >= 0; k--) if (m[at + k] !== cid[k]) continue outer;
      return i;
    }
    return -1;
  }

  /**
   * Copies the pack's bytes from `offset` into `target`, framed as a CARv1 frames them.
   * @throws {RangeError} when the range runs past the pack's end.
   */
  read(offset: number, target: Uint8Array): void {
    const end = offset + target.length;
    if (!Number.isSafeInteger(offset) || offset < 0 || end > this.size) {
      throw new RangeError(`pack range ${offset}+${target.length} is outside its ${this.size} bytes`);
    }
    let at = 0;
    let pos = offset;
    // `length` bytes of `src` from `start`, the part of them in [pos, end) that `begin` (the
    // pack offset of their first byte) puts there.
    const copy = (src: Uint8Array, start: number, begin: number, length: number) => {
      const from = pos - begin;
      const to = Math.min(length, end - begin);
      if (src instanceof Buffer) src.copy(target, at, start + from, start + to);
      else target.set(src.subarray(start + from, start + to), at);
      at += to - from;
      pos += to - from;
    };
    // The same through one view: for long runs, where a view costs less than Buffer#copy's checks.
    const copyView = (src: Buffer, start: number, begin: number, length: number) => {
      const from = pos - begin;
      const to = Math.min(length, end - begin);
      target.set(new Uint8Array(src.buffer, src.byteOffset + start + from, to - from), at);
      at += to - from;
      pos += to - from;
    };
    if (pos < HEADER_FRAME.length) copy(HEADER_FRAME, 0, 0, HEADER_FRAME.length);
    const n = this.offsets.length;
    for (let i = pos < end ? this.#frameAt(pos) : 0; pos < end; i++) {
      if (this.#framed[i]) {
        // This frame and the ones after it that follow it in the same memory: one copy.
        const mem = this.#dataMemory[i]!;
        const frameAt = this.#dataStart[i]! - (this.offsets[i]! - this.#frameStartOf(i));
        let last = i;
        let memEnd = this.#dataStart[i]! + this.lengths[i]!;
        while (last + 1 < n && this.offsets[last]! + this.lengths[last]! < end) {
          const j = last + 1;
          if (!this.#framed[j] || this.#dataMemory[j] !== mem || this.#dataStart[j]! - (this.offsets[j]! - this.#frameStartOf(j)) !== memEnd) break;
          memEnd = this.#dataStart[j]! + this.lengths[j]!;
          last = j;
        }
        const runBegin = this.#frameStartOf(i);
        copyView(this.#memory[mem]!, frameAt, runBegin, this.offsets[last]! + this.lengths[last]! - runBegin);
        i = last;
        continue;
      }
      const cidLength = this.#cidLengthOf(i);
      const length = this.lengths[i]!;
      const dataStart = this.offsets[i]!;
      const cidStart = dataStart - cidLength;
      if (pos < cidStart) {
        const n = writeVarint(this.#varint, 0, cidLength + length);
        copy(this.#varint, 0, cidStart - n, n);
      }
      if (pos < end && pos < dataStart) copy(this.#memory[this.#cidMemoryOf(i)]!, this.#cidStartOf(i), cidStart, cidLength);
      if (pos < end) copy(this.#memory[this.#dataMemory[i]!]!, this.#dataStart[i]!, dataStart, length);
    }
  }

  /** Where block `i`'s frame starts in the pack. */
  #frameStartOf(i: number): number {
    const cidLength = this.#cidLengthOf(i);
    return this.offsets[i]! - cidLength - varintLength(cidLength + this.lengths[i]!);
  }

  /** The first frame that ends after `pos` (frames lie back to back after the header). */
  #frameAt(pos: number): number {
    let lo = 0;
    let hi = this.offsets.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.offsets[mid]! + this.lengths[mid]! > pos) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

/** What the store path lays out: a {@link PackLayout}. */
export type LaidOutPack = PackLayout;

/**
 * A {@link PackLayout} of `count` distinct, verified blocks, its frames in the order given (the
 * store path gives them in CID order): what the store path stores. Not in the order they lie in
 * memory, which would read it front to back: where a CAR's blocks lie depends on how its bytes
 * arrived (the chunks of a response, a block split across two assembled in a buffer of its own),
 * so the same blocks would make different packs under different keys, and a retried import would
 * leave the first attempt's pack behind beside its own.
 */
export function layOutPack(count: number, cidAt: (i: number) => Uint8Array, dataAt: (i: number) => Uint8Array): PackLayout {
  return new PackLayout(count, cidAt, dataAt);
}

/**
 * Reads one block's data from a pack with a ranged get. When `cid` is given, the bytes are
 * checked against it.
 *
 * @throws {PackNotFoundError} when the blobstore has no object at `packKey`.
 * @throws {BlockHashMismatchError} naming the CID when the bytes do not hash to `cid`.
 * @throws {RangeNotSatisfiableError} (from the store) when the range runs past the pack's end.
 */
export async function readBlock(
  store: BlobStore,
  packKey: string,
  offset: number,
  length: number,
  cid?: Uint8Array,
): Promise<Uint8Array> {
  const bytes = await store.getRange(packKey, offset, length);
  if (bytes === null) throw new PackNotFoundError(packKey);
  if (cid) {
    const parsed = parseCid(cid);
    const actual = createHash('sha256').update(bytes).digest();
    if (!actual.equals(parsed.digest.contents)) {
      throw new BlockHashMismatchError(cidToString(parsed), packKey, offset, length, actual.toString('hex'));
    }
  }
  return bytes;
}

/** A pack that is in the blobstore and indexed. */
export interface StoredPack {
  packId: number;
  key: string;
  sizeBytes: number;
  entries: PackEntry[];
  /**
   * CIDs this call added to the block index, in no particular order. The others were already
   * indexed (in this pack by an earlier attempt, or in another pack) and keep their location.
   */
  inserted: Uint8Array[];
}

/**
 * Writes the pack to the blobstore, read from its blocks a piece at a time. Idempotent: the key
 * is derived from the bytes.
 */
export async function putPack(store: BlobStore, pack: ByteSource & { key: string }): Promise<void> {
  await store.put(pack.key, pack);
}

const INDEX_BATCH = 10_000;

/**
 * Inserts the `packs` row (or finds it, when an earlier attempt inserted it) and the `blocks`
 * rows for every block not indexed yet, on `db`, which should be the caller's transaction.
 * A block inserted here starts with the refcount `initialRefcount` gives it (default 0), so that
 * an importer that knows the references it is adding writes each new row once; blocks already
 * indexed are left as they are, and are not in `inserted`.
 *
 * The pack must be in the blobstore before the caller's transaction commits, so the index
 * never names a missing pack.
 */
export async function indexPack(db: Queryable, pack: FinishedPack, initialRefcount?: (cid: Uint8Array) => number): Promise<StoredPack> {
  const { rows } = await db.query<{ id: string }>(
    // DO UPDATE (a no-op) rather than DO NOTHING, so that RETURNING yields the existing id.
    `INSERT INTO packs (key, size_bytes, block_count) VALUES ($1, $2, $3)
     ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key RETURNING id`,
    [pack.key, pack.size, pack.entries.length],
  );
  const packId = Number(rows[0]!.id);
  // In CID byte order, so that concurrent imports sharing blocks take index locks in one order
  // and cannot deadlock on each other.
  const sorted = sortByCid(pack.entries);
  const inserted: Uint8Array[] = [];
  for (let i = 0; i < sorted.length; i += INDEX_BATCH) {
    const batch = sorted.slice(i, i + INDEX_BATCH);
    const res = await db.query<{ cid: Buffer }>(
      `INSERT INTO blocks (cid, pack_id, byte_offset, byte_length, refcount)
       SELECT c, $1, o, l, r FROM unnest($2::bytea[], $3::bigint[], $4::integer[], $5::bigint[]) AS t(c, o, l, r)
       ORDER BY c
       ON CONFLICT (cid) DO NOTHING
       RETURNING cid`,
      [packId, batch.map((e) => e.cid), batch.map((e) => e.offset), batch.map((e) => e.length), batch.map((e) => (initialRefcount ? initialRefcount(e.cid) : 0))],
    );
    for (const r of res.rows) inserted.push(r.cid);
  }
  return { packId, key: pack.key, sizeBytes: pack.size, entries: pack.entries, inserted };
}

/**
 * Finishes `writer`, puts the pack to the blobstore, then indexes it on `db` (the caller's
 * transaction). This write order is what makes a crash safe: a pack nobody indexed is garbage
 * for GC, never a dangling index row. Returns null, storing nothing, when the writer is empty.
 *
 * The put happens while the caller's transaction is open; an importer that wants no
 * transaction open during the upload calls {@link putPack} before BEGIN and
 * {@link indexPack} after.
 */
export async function storePack(store: BlobStore, db: Queryable, writer: PackWriter): Promise<StoredPack | null> {
  if (writer.blockCount === 0) return null;
  const pack = writer.finish();
  await putPack(store, pack);
  return indexPack(db, pack);
}

export interface BlockLocation {
  packId: number;
  packKey: string;
  offset: number;
  length: number;
  refcount: number;
}

/** Where the block index says `cid` is, or null when it is not indexed. */
export async function locateBlock(db: Queryable, cid: Uint8Array): Promise<BlockLocation | null> {
  const { rows } = await db.query<{ pack_id: string; key: string; byte_offset: string; byte_length: number; refcount: string }>(
    `SELECT b.pack_id, p.key, b.byte_offset, b.byte_length, b.refcount
     FROM blocks b JOIN packs p ON p.id = b.pack_id WHERE b.cid = $1`,
    [cid],
  );
  const r = rows[0];
  if (!r) return null;
  return { packId: Number(r.pack_id), packKey: r.key, offset: Number(r.byte_offset), length: r.byte_length, refcount: Number(r.refcount) };
}

function parseCid(cid: Uint8Array): Cid {
  try {
    return decodeCid(cid);
  } catch (err) {
    const hint = cid[0] === 0 ? ' (this is the 0x00-prefixed DAG-CBOR link form; pass Cid.bytes)' : '';
    throw new InvalidBlockCidError(`${(err as Error).message}${hint}`);
  }
}

/**
 * A sorted copy of `entries` in the byte order of their CIDs, which is Postgres's order for
 * bytea: changes to block rows (index inserts, refcount updates) made in this order by every
 * transaction cannot deadlock on each other.
 */
export function sortByCid<T extends { cid: Uint8Array }>(entries: readonly T[]): T[] {
  // Buffer.compare as a comparator costs a native call per comparison (about 1 s for 200,000
  // blocks). For SHA-256 CIDv1s (01 <codec> 12 20 <digest>) a numeric key of the codec byte and
  // the digest's first 4 bytes settles nearly every comparison; ties, and CIDs of any other
  // shape, fall back to comparing bytes.
  const keys = new Float64Array(entries.length);
  for (let i = 0; i < entries.length; i++) {
    const c = entries[i]!.cid;
    keys[i] =
      c.length === 36 && c[0] === 1 && c[2] === 0x12 && c[3] === 32
        ? c[1]! * 2 ** 32 + c[4]! * 2 ** 24 + c[5]! * 2 ** 16 + c[6]! * 2 ** 8 + c[7]!
        : NaN;
  }
  const order = Array.from(entries.keys());
  order.sort((a, b) => keys[a]! - keys[b]! || compareBytes(entries[a]!.cid, entries[b]!.cid));
  return order.map((i) => entries[i]!);
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/** A Set key for a CID, without copying its bytes. */
function cidId(cid: Uint8Array): string {
  return Buffer.from(cid.buffer, cid.byteOffset, cid.byteLength).toString('latin1');
}

/** Bytes of `n` as an unsigned LEB128 varint (CAR's section lengths). */
export function varintLength(n: number): number {
  let len = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    len++;
  }
  return len;
}

/** Unsigned LEB128, as CAR uses; arithmetic rather than bit operators so sizes past 2^31 work. */
export function writeVarint(out: Uint8Array, pos: number, n: number): number {
  while (n >= 0x80) {
    out[pos++] = (n % 0x80) | 0x80;
    n = Math.floor(n / 0x80);
  }
  out[pos++] = n;
  return pos;
}
