/**
 * Bulk reads of many small rows as one packed `bytea` per group, built by `string_agg` in SQL,
 * sent as base64 (`onWire`) and read here with a DataView. node-postgres parses a result row at
 * some 10–20 µs (each column a string, `bytea` as hex, `bigint` as text); a repo's record index,
 * event log and block locations are tens of thousands of rows, which made parsing the walk's
 * largest cost. Packed, they cost one base64 decode (native) and a few DataView reads per row.
 *
 * The SQL fragment and the reader of each format sit side by side so that they stay in step.
 * Text is UTF-8 with a 4-byte length, −1 for NULL; integers are big-endian (`int4send`,
 * `int8send`).
 */
import type { BlockLoc } from './nodes.ts';
import type { LocationTable } from './locations.ts';

// `textsend` gives a text's bytes in the database's encoding without converting them: the
// columns packed as text (rkeys, NSIDs, event kinds) are ASCII, the same bytes in every
// encoding PostgreSQL has, and it costs a third of `convert_to` (5,000 events: 12 ms of
// PostgreSQL CPU instead of 17). A NULL makes the whole concatenation NULL: length −1 then.
const text = (col: string) => `coalesce(int4send(octet_length(${col})) || textsend(${col}), '\\xffffffff'::bytea)`;
const bytes = (col: string) => `coalesce(int4send(octet_length(${col})) || ${col}, '\\xffffffff'::bytea)`;

/** One block index row of `blocks b`: cid, offset, length, refcount. */
export const LOC_SQL = `${bytes('b.cid')} || int8send(b.byte_offset) || int4send(b.byte_length) || int8send(b.refcount)`;

/** One record index row of `records r` (collection is the group's): rkey, cid. */
export const RECORD_SQL = `${text('r.rkey')} || ${bytes('r.cid')}`;

/** One event of `events e`: id, kind, collection, rkey, cid. */
export const EVENT_SQL = `int8send(e.id) || ${text('e.kind')} || ${text('e.collection')} || ${text('e.rkey')} || ${bytes('e.cid')}`;

/**
 * A packed aggregate as it crosses the wire: base64 text, not `bytea`. node-postgres receives a
 * `bytea` as hex text, two characters a byte, and decodes the hex in JavaScript; base64 is four
 * characters for three bytes, and Node decodes it natively (4 MiB: about 15 ms as hex, 5 as
 * base64). PostgreSQL breaks its base64 into lines of 76 characters, which the decoder skips.
 */
export const onWire = (aggregate: string): string => `encode(${aggregate}, 'base64')`;

/** The bytes of an aggregate `onWire` sent. */
export function fromWire(text: string): Buffer {
  return Buffer.from(text, 'base64');
}

class Reader {
  readonly view: DataView;
  readonly buf: Buffer;
  pos = 0;
  constructor(buf: Buffer) {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  get done(): boolean {
    return this.pos >= this.buf.length;
  }
  int4(): number {
    const v = this.view.getInt32(this.pos);
    this.pos += 4;
    return v;
  }
  int8(): number {
    // Offsets, lengths, counts and ids stay far below 2^53: two 32-bit halves, where
    // `getBigInt64` made a BigInt per read (a tenth of a walk's allocations of small repos).
    const v = this.view.getInt32(this.pos) * 0x1_0000_0000 + this.view.getUint32(this.pos + 4);
    this.pos += 8;
    return v;
  }
  bytes(): Buffer | null {
    const n = this.int4();
    if (n < 0) return null;
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  text(): string | null {
    const n = this.int4();
    if (n < 0) return null;
    const s = this.buf.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
}

// The readers return arrays, not generators: a batch unpacks tens of thousands of rows, each
// then one object rather than an object and an iterator result.

/** The `[cid, location]` pairs of a packed `LOC_SQL` aggregate of one pack. */
export function readLocs(packed: Buffer, pack: { id: number; key: string | null; size: number }): [Uint8Array, BlockLoc][] {
  const r = new Reader(packed);
  const out: [Uint8Array, BlockLoc][] = [];
  while (!r.done) {
    const cid = r.bytes()!;
    const offset = r.int8();
    const length = r.int4();
    const refcount = r.int8();
    out.push([cid, { packId: pack.id, packKey: pack.key, packSize: pack.size, offset, length, refcount }]);
  }
  return out;
}

/** Locations as a packed `LOC_SQL` aggregate (what `readLocsInto` reads): `cids[i]` at `locs[i]`. */
export function packLocs(cids: readonly Uint8Array[], locs: readonly BlockLoc[]): Buffer {
  const out = Buffer.allocUnsafe(cids.reduce((n, c) => n + 24 + c.length, 0));
  let at = 0;
  for (const [i, cid] of cids.entries()) {
    const loc = locs[i]!;
    at = out.writeInt32BE(cid.length, at);
    out.set(cid, at);
    at += cid.length;
    at = out.writeUInt32BE(Math.floor(loc.offset / 0x1_0000_0000), at);
    at = out.writeUInt32BE(loc.offset % 0x1_0000_0000, at);
    at = out.writeInt32BE(loc.length, at);
    at = out.writeUInt32BE(Math.floor(loc.refcount / 0x1_0000_0000), at);
    at = out.writeUInt32BE(loc.refcount % 0x1_0000_0000, at);
  }
  return out;
}

/** Adds the blocks of a packed `LOC_SQL` aggregate of one pack to `table`. */
export function readLocsInto(packed: Buffer, table: LocationTable, pack: { id: number; key: string | null; size: number }): void {
  const r = new Reader(packed);
  const p = table.pack(pack.id, pack.key, pack.size);
  // Each row is 60 bytes (a 36-byte CID, its length and three numbers).
  table.reserve(table.size + Math.ceil(packed.length / 60));
  while (!r.done) {
    const n = r.int4();
    const at = r.pos;
    r.pos += n;
    const offset = r.int8();
    const length = r.int4();
    const refcount = r.int8();
    if (n === 36) table.add(packed, at, p, offset, length, refcount);
  }
}

/**
 * A repo's record index as the packed `RECORD_SQL` aggregates of its collections, read a range
 * of rows at a time: besides the bytes, one offset per row (4 bytes) is all it holds, where
 * row objects cost some 150 bytes each and the collector's time to trace them.
 */
export class PackedRecords {
  readonly length: number;
  readonly #groups: readonly { collection: string; packed: Buffer }[];
  /** The first row of each group, and past the last, the length. */
  readonly #firstRow: number[];
  /** Each row's offset in its group's buffer. */
  readonly #at: Int32Array;

  constructor(groups: readonly { collection: string; packed: Buffer }[]) {
    this.#groups = groups;
    const at: number[] = [];
    this.#firstRow = [];
    for (const g of groups) {
      this.#firstRow.push(at.length);
      const view = new DataView(g.packed.buffer, g.packed.byteOffset, g.packed.byteLength);
      for (let pos = 0; pos < g.packed.length; ) {
        at.push(pos);
        pos += 4 + view.getInt32(pos);
        pos += 4 + view.getInt32(pos);
      }
    }
    this.length = at.length;
    this.#firstRow.push(at.length);
    this.#at = Int32Array.from(at);
  }

  /** Rows per collection (the packed groups are one per collection). */
  collectionCounts(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [g, { collection }] of this.#groups.entries()) out.set(collection, (out.get(collection) ?? 0) + this.#firstRow[g + 1]! - this.#firstRow[g]!);
    return out;
  }

  /** Calls `fn` with each row's number and path (`collection/rkey`), in order, making no row objects. */
  forEachPath(fn: (row: number, path: string) => void): void {
    for (const [g, { collection, packed }] of this.#groups.entries()) {
      const prefix = `${collection}/`;
      const view = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
      for (let i = this.#firstRow[g]!; i < this.#firstRow[g + 1]!; i++) {
        const at = this.#at[i]!;
        fn(i, prefix + packed.toString('utf8', at + 4, at + 4 + view.getInt32(at)));
      }
    }
  }

  /** Whether row `row`'s CID is `cid`, compared in place. */
  cidEquals(row: number, cid: Uint8Array): boolean {
    const { packed } = this.#groups[this.#groupOf(row)]!;
    let at = this.#at[row]!;
    at += 4 + packed.readInt32BE(at);
    const n = packed.readInt32BE(at);
    if (n !== cid.length) return false;
    at += 4;
    for (let k = 0; k < n; k++) if (packed[at + k] !== cid[k]) return false;
    return true;
  }

  /** Row `row`. */
  row(row: number): { collection: string; rkey: string; cid: Uint8Array } {
    return this.read(row, row + 1)[0]!;
  }

  /** The group that holds `row` (binary search: a repo has few collections). */
  #groupOf(row: number): number {
    let lo = 0;
    let hi = this.#groups.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.#firstRow[mid]! <= row) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** Rows `from` to `end` (exclusive), in order. */
  read(from: number, end: number): { collection: string; rkey: string; cid: Uint8Array }[] {
    const out: { collection: string; rkey: string; cid: Uint8Array }[] = [];
    let g = -1;
    let collection = '';
    let r: Reader | undefined;
    for (let i = from; i < end; i++) {
      if (g < 0 || this.#firstRow[g + 1]! <= i) {
        do g++;
        while (this.#firstRow[g + 1]! <= i);
        collection = this.#groups[g]!.collection;
        r = new Reader(this.#groups[g]!.packed);
      }
      r!.pos = this.#at[i]!;
      const rkey = r!.text()!;
      const cid = r!.bytes()!;
      out.push({ collection, rkey, cid });
    }
    return out;
  }
}

/** A repo's events as a packed `EVENT_SQL` aggregate, read a range at a time (see `PackedRecords`). */
export class PackedEvents {
  readonly length: number;
  readonly #packed: Buffer;
  readonly #at: Int32Array;

  constructor(packed: Buffer) {
    this.#packed = packed;
    const at: number[] = [];
    const r = new Reader(packed);
    while (!r.done) {
      at.push(r.pos);
      r.pos += 8;
      for (let k = 0; k < 4; k++) {
        const n = r.int4();
        if (n > 0) r.pos += n;
      }
    }
    this.length = at.length;
    this.#at = Int32Array.from(at);
  }

  /** Events `from` to `end` (exclusive), in order. */
  read(from: number, end: number): { id: string; kind: string; collection: string | null; rkey: string | null; cid: Uint8Array | null }[] {
    const r = new Reader(this.#packed);
    const out: { id: string; kind: string; collection: string | null; rkey: string | null; cid: Uint8Array | null }[] = [];
    for (let i = from; i < end; i++) {
      r.pos = this.#at[i]!;
      const id = String(r.int8());
      const kind = r.text()!;
      const collection = r.text();
      const rkey = r.text();
      const cid = r.bytes();
      out.push({ id, kind, collection, rkey, cid });
    }
    return out;
  }
}
