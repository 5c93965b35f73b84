/**
 * A batch's blocks and references, held compactly: every block the batch may need stored
 * (a candidate, with where its bytes are) and every reference it adds or drops (a refcount
 * delta), one entry each. `group()` sorts the entries into CID byte order (the lock order every
 * refcount writer keeps) and sums each CID's entries, so a block that several records, events or
 * changes name is one row with one refcount.
 *
 * A `Map` keyed by CID strings cost a string, a map entry and often a base32 encode or decode
 * per block; for a 100,000-record repo that was most of the time and memory between verify and
 * the database. Here an entry is four integers, and no CID is copied: an entry names where its
 * 36 bytes lie (a block of a source by its index, or an offset in an array the caller passed),
 * and a group names the entry that stands for it. A copy of every CID, twice (the entries',
 * then the groups'), with the arrays grown by doubling, was some 150 bytes a block at the
 * grouping's peak, about a third of a large repo's CAR; now it is 25 once grouped, and 16 an entry
 * more while grouping.
 *
 * The arrays passed (CIDs, a source's buffers) are read until the groups are no longer used:
 * they must not change before then.
 */
import { CID_LENGTH } from '../atproto/cid.ts';
import { release, resized } from '../atproto/typed-arrays.ts';

/**
 * Where candidate bytes come from: a verified repo's block map, by index. The block's CID is
 * the 36 bytes at `startAt(index)` of `buffers[bufferIndexAt(index)]`.
 */
export interface BlockSource {
  dataAt(index: number): Uint8Array;
  startAt(index: number): number;
  /** The buffers its blocks lie in; block `index` is in the one at `bufferIndexAt(index)`. */
  readonly buffers: readonly Uint8Array[];
  bufferIndexAt(index: number): number;
}

/** The entries of one CID, summed. */
export interface BlockGroups {
  count: number;
  /** Summed refcount change. */
  delta: Int32Array;
  /** Whether the batch carries the block's bytes (a candidate for the pack). */
  carried: Uint8Array;
  /** The change that first needed the block (its index in the batch); -1 when not carried. */
  ownerAt(group: number): number;
  /** The block's bytes; only when carried. */
  dataAt(group: number): Uint8Array;
  /** The group's CID: a view. */
  cidAt(group: number): Uint8Array;
  /** Copies the group's 36 CID bytes into `target` at `at`. */
  copyCid(group: number, target: Uint8Array, at: number): void;
  /**
   * Frees the groups' memory now (for a large repo some MB, which a collection would free only
   * once it got to them): for a caller that is done with them. Nothing of them may be read after.
   */
  release(): void;
}

// An entry's fields, side by side (grouping reads the entries in CID order, at random: one cache
// line an entry rather than four): its refcount delta, the change that needs it, and where its
// CID lies. A block the batch carries names its source (≥ 0) and its index there, where its
// bytes and its CID are; a reference names the array its CID was passed in (`~index` into the
// arrays passed: negative) and the offset there.
const FIELDS = 4;
const DELTA = 0;
const OWNER = 1;
const SOURCE = 2;
const INDEX = 3;

export class BlockRefs {
  #meta = new Int32Array(0);
  #n = 0;
  readonly #sources: BlockSource[] = [];
  // The arrays CIDs were passed in, each once in a row (many CIDs of one array come together).
  readonly #memory: Uint8Array[] = [];
  // Loose blocks: their bytes, and where their CIDs lie.
  readonly #loose: Uint8Array[] = [];
  readonly #looseCid: Uint8Array[] = [];
  readonly #looseCidAt: number[] = [];
  readonly #looseSource: BlockSource = {
    dataAt: (i) => this.#loose[i]!,
    startAt: (i) => this.#looseCidAt[i]!,
    buffers: this.#looseCid,
    bufferIndexAt: (i) => i,
  };

  constructor() {
    this.#sources.push(this.#looseSource);
  }

  get size(): number {
    return this.#n;
  }

  /** Makes room for `more` entries beyond those held, so that adding them copies nothing. */
  reserve(more: number): void {
    const want = (this.#n + more) * FIELDS;
    if (want > this.#meta.length) this.#resize(want);
  }

  /** Registers a block map (or anything with its `dataAt`, `bufferAt`, `startAt`); returns its id for {@link block}. */
  source(s: BlockSource): number {
    this.#sources.push(s);
    return this.#sources.length - 1;
  }

  /** {@link ref} of a whole 36-byte CID (RefDeltas' shape, for wipeRepoRows). */
  add(cid: Uint8Array, delta: number): void {
    this.#push(delta, -1, ~this.#memoryOf(cid), 0);
  }

  /** A reference change to a block the batch does not carry (it must be indexed already). */
  ref(cid: Uint8Array, offset: number, delta: number): void {
    this.#push(delta, -1, ~this.#memoryOf(cid), offset);
  }

  /** A block the batch carries, block `index` of `source` (its CID with it), with the references it gains (≥ 0). */
  block(source: number, index: number, delta: number, owner: number): void {
    this.#push(delta, owner, source, index);
  }

  /** A carried block whose bytes are their own array. */
  looseBlock(cid: Uint8Array, offset: number, delta: number, data: Uint8Array, owner: number): void {
    this.#loose.push(data);
    this.#looseCid.push(cid);
    this.#looseCidAt.push(offset);
    this.#push(delta, owner, 0, this.#loose.length - 1);
  }

  #memoryOf(cid: Uint8Array): number {
    const memory = this.#memory;
    if (memory[memory.length - 1] !== cid) memory.push(cid);
    return memory.length - 1;
  }

  #push(delta: number, owner: number, source: number, index: number): void {
    const at = this.#n * FIELDS;
    if (at === this.#meta.length) this.#resize(Math.max(1024 * FIELDS, 2 * at));
    const meta = this.#meta;
    meta[at + DELTA] = delta;
    meta[at + OWNER] = owner;
    meta[at + SOURCE] = source;
    meta[at + INDEX] = index;
    this.#n++;
  }

  #resize(length: number): void {
    // The old entries are let go at once (typed-arrays.ts), not left for a full collection.
    this.#meta = resized(this.#meta, length);
  }

  /** The entries grouped by CID, in CID byte order. Takes them: the refs are empty after. */
  group(): BlockGroups {
    const n = this.#n;
    const meta = this.#meta;
    const sources = this.#sources.slice();
    // Where an entry's CID lies is looked up from the entry as it is read: an array of where each
    // one lies (8 bytes an entry) was most of what grouping held beside the entries, and reading
    // it in CID order missed the cache as often as reading the entry's source does.
    const loc = new CidLocator(meta, sources, this.#memory.slice());
    const memory = loc.memory;
    const { order, tie, spare } = sortedByCid(n, loc);
    // Per group, what the later passes read, in CID order (the entries are at random in it: each
    // pass would otherwise miss the cache three times a group to find a CID): where its CID lies;
    // and, from the entry that carries its bytes with the lowest change index (the change that
    // first needed it), that change, the source and the index there. What the sort is done with
    // is reused: its keys' memory for the CIDs' places, the order itself for the indexes (group g
    // is written once entries 0..g of the order are read). The entries are let go.
    const places = spare ?? new ArrayBuffer(8 * n);
    const cidIn = new Int32Array(places, 0, n);
    const cidAt = new Uint32Array(places, 4 * n, n);
    const index = order;
    const delta = new Int32Array(n);
    const carried = new Uint8Array(n);
    const owner = new Int32Array(n);
    const source = new Int32Array(n);
    let g = -1;
    let repBuf: Uint8Array = EMPTY;
    let repOff = 0;
    for (let k = 0; k < n; k++) {
      const e = order[k]!;
      const inMemory = loc.memoryOf(e);
      const buf = memory[inMemory]!;
      const off = loc.offOf(e);
      if (g < 0 || tie[k] === 0 || !sameCid(buf, off, repBuf, repOff)) {
        g++;
        repBuf = buf;
        repOff = off;
        cidIn[g] = inMemory;
        cidAt[g] = off;
        owner[g] = -1;
      }
      const at = e * FIELDS;
      delta[g]! += meta[at + DELTA]!;
      if (meta[at + SOURCE]! >= 0 && (carried[g] === 0 || meta[at + OWNER]! < owner[g]!)) {
        carried[g] = 1;
        owner[g] = meta[at + OWNER]!;
        source[g] = meta[at + SOURCE]!;
        index[g] = meta[at + INDEX]!;
      }
    }
    // What only grouping read is let go now: for a large repo some MB, which a collection would
    // free only once it got to them, and the store path allocates more right after.
    release(meta);
    release(tie);
    this.#meta = new Int32Array(0);
    this.#n = 0;
    this.#sources.length = 1;
    this.#memory.length = 0;
    const count = g + 1;
    return new Groups(count, delta, carried, { owner, source, index }, sources, memory, cidIn, cidAt);
  }
}

/** {@link BlockGroups}: per group, its sums, where its CID lies, and which entry's bytes it carries. */
class Groups implements BlockGroups {
  readonly count: number;
  readonly delta: Int32Array;
  readonly carried: Uint8Array;
  readonly #owner: Int32Array;
  readonly #source: Int32Array;
  readonly #index: Int32Array;
  readonly #sources: BlockSource[];
  readonly #memory: readonly Uint8Array[];
  readonly #cidIn: Int32Array;
  readonly #cidAt: Uint32Array;
  // The arrays `delta` and `carried` view the start of.
  readonly #deltaMemory: Int32Array;
  readonly #carriedMemory: Uint8Array;

  constructor(count: number, delta: Int32Array, carried: Uint8Array, bytes: { owner: Int32Array; source: Int32Array; index: Int32Array }, sources: BlockSource[], memory: readonly Uint8Array[], cidIn: Int32Array, cidAt: Uint32Array) {
    this.count = count;
    this.delta = delta.subarray(0, count);
    this.carried = carried.subarray(0, count);
    this.#deltaMemory = delta;
    this.#carriedMemory = carried;
    this.#owner = bytes.owner;
    this.#source = bytes.source;
    this.#index = bytes.index;
    this.#sources = sources;
    this.#memory = memory;
    this.#cidIn = cidIn;
    this.#cidAt = cidAt;
  }

  ownerAt(group: number): number {
    return this.carried[group] ? this.#owner[group]! : -1;
  }

  dataAt(group: number): Uint8Array {
    return this.#sources[this.#source[group]!]!.dataAt(this.#index[group]!);
  }

  cidAt(group: number): Uint8Array {
    const off = this.#cidAt[group]!;
    return this.#memory[this.#cidIn[group]!]!.subarray(off, off + CID_LENGTH);
  }

  copyCid(group: number, target: Uint8Array, at: number): void {
    const buf = this.#memory[this.#cidIn[group]!]!;
    const off = this.#cidAt[group]!;
    for (let i = 0; i < CID_LENGTH; i++) target[at + i] = buf[off + i]!;
  }

  release(): void {
    // cidIn and cidAt share one buffer (the sort's keys', or their own): it goes with the first.
    for (const array of [this.#deltaMemory, this.#carriedMemory, this.#owner, this.#source, this.#index]) release(array);
    const places = this.#cidIn.buffer;
    if (places instanceof ArrayBuffer && !places.detached) places.transfer(0);
  }
}

const EMPTY = new Uint8Array(0);

/** Where an entry's CID lies: in `memory[memoryOf(e)]`, at `offOf(e)`. */
class CidLocator {
  /** Every array a CID may lie in: each source's buffers, then the arrays CIDs were passed in. */
  readonly memory: Uint8Array[] = [];
  readonly #meta: Int32Array;
  readonly #sources: BlockSource[];
  // Where each source's buffers start in `memory`; where the arrays passed start.
  readonly #base: number[] = [];
  readonly #passed: number;

  constructor(meta: Int32Array, sources: BlockSource[], passed: Uint8Array[]) {
    this.#meta = meta;
    this.#sources = sources;
    for (const s of sources) {
      this.#base.push(this.memory.length);
      for (const b of s.buffers) this.memory.push(b);
    }
    this.#passed = this.memory.length;
    for (const b of passed) this.memory.push(b);
  }

  offOf(e: number): number {
    const s = this.#meta[e * FIELDS + SOURCE]!;
    const index = this.#meta[e * FIELDS + INDEX]!;
    return s < 0 ? index : this.#sources[s]!.startAt(index);
  }

  /** The index in `memory` of the array entry `e`'s CID lies in. */
  memoryOf(e: number): number {
    const s = this.#meta[e * FIELDS + SOURCE]!;
    return s < 0 ? this.#passed + ~s : this.#base[s]! + this.#sources[s]!.bufferIndexAt(this.#meta[e * FIELDS + INDEX]!);
  }
}

/** From the digest's last byte: CIDs that differ, as sorted neighbours nearly all do, differ there. */
function sameCid(a: Uint8Array, at: number, b: Uint8Array, bt: number): boolean {
  for (let i = CID_LENGTH - 1; i >= 0; i--) if (a[at + i] !== b[bt + i]) return false;
  return true;
}

/**
 * Entry indexes in CID byte order. The version and hash bytes are the same for every CID repos
 * use, so the order is the codec's, then the digest's. A key of the codec (one bit: raw or
 * dag-cbor), the digest's leading bits and the entry's index fits a double exactly (52 bits:
 * the index takes what it needs, at least 20, the digest the rest, at most 31), and a typed
 * array of doubles sorts natively, several times faster than a comparator; entries whose
 * leading bits agree (equal CIDs, and the odd true tie) are then put in order by their bytes.
 * Each key is stored plus 2^52, so that the double's low 52 bits are the key itself: the index
 * and the prefix are read back as integers from the words of the sorted array, without a
 * floating-point division per entry.
 */
function sortedByCid(n: number, at: CidLocator): Sorted {
  const memory = at.memory;
  const order = new Int32Array(n);
  // 1 where an entry's CID may be the one before it in the order (their keys agree): only there
  // need grouping compare their bytes.
  const tie = new Uint8Array(n);
  const indexBits = Math.max(20, Math.ceil(Math.log2(n + 1)));
  const digestBits = 51 - indexBits;
  const scale = 2 ** indexBits;
  const shift = 2 ** (32 - digestBits);
  const packed = digestBits >= 16 ? new Float64Array(n) : undefined;
  let packable = packed !== undefined;
  for (let i = 0; i < n && packable; i++) {
    const buf = memory[at.memoryOf(i)]!;
    const off = at.offOf(i);
    const codec = buf[off + 1];
    packable = codec === 0x71 || codec === 0x55;
    const prefix = (codec === 0x71 ? 2 ** digestBits : 0) + Math.floor(digest32(buf, off) / shift);
    packed![i] = 2 ** 52 + prefix * scale + i;
  }
  if (!packable) {
    const key = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const buf = memory[at.memoryOf(i)]!;
      const off = at.offOf(i);
      key[i] = buf[off + 1]! * 2 ** 32 + digest32(buf, off);
    }
    for (let i = 0; i < n; i++) order[i] = i;
    order.sort((a, b) => key[a]! - key[b]! || compareEntries(at, a, b));
    tie.fill(1);
    return { order, tie, spare: undefined };
  }
  packed!.sort();
  // The key's low 32 bits and the 20 above them (under the sign and exponent bits, the same in every entry).
  const words = new Uint32Array(packed!.buffer);
  const lo = LITTLE_ENDIAN ? 0 : 1;
  const hi = 1 - lo;
  const mask = scale - 1;
  for (let k = 0; k < n; k++) order[k] = words[2 * k + lo]! & mask;
  // Runs of equal prefixes (the key without its index bits), in byte order.
  for (let k = 0; k < n; ) {
    const high = words[2 * k + hi]!;
    const low = words[2 * k + lo]! >>> indexBits;
    let end = k + 1;
    while (end < n && words[2 * end + hi] === high && words[2 * end + lo]! >>> indexBits === low) end++;
    if (end - k > 1) {
      const run = Array.from(order.subarray(k, end)).sort((a, b) => compareEntries(at, a, b) || a - b);
      order.set(run, k);
      tie.fill(1, k + 1, end);
    }
    k = end;
  }
  return { order, tie, spare: packed!.buffer };
}

/** Entry indexes in CID order, and where a CID may repeat the one before it; the keys' memory (8 bytes an entry), free now. */
interface Sorted {
  order: Int32Array;
  tie: Uint8Array;
  spare: ArrayBuffer | undefined;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The digest's first 32 bits, unsigned. */
function digest32(cids: Uint8Array, o: number): number {
  return ((cids[o + 4]! << 24) >>> 0) + (cids[o + 5]! << 16) + (cids[o + 6]! << 8) + cids[o + 7]!;
}

function compareEntries(at: CidLocator, a: number, b: number): number {
  const ab = at.memory[at.memoryOf(a)]!;
  const ao = at.offOf(a);
  const bb = at.memory[at.memoryOf(b)]!;
  const bo = at.offOf(b);
  for (let i = 0; i < CID_LENGTH; i++) {
    const d = ab[ao + i]! - bb[bo + i]!;
    if (d !== 0) return d;
  }
  return 0;
}
