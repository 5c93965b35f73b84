/**
 * A batch's blocks and references, held compactly: every block the batch may need stored
 * (a candidate, with where its bytes are) and every reference it adds or drops (a refcount
 * delta), one entry each, CIDs in one byte arena. `group()` sorts the entries into CID byte
 * order (the lock order every refcount writer keeps) and sums each CID's entries, so a block
 * that several records, events or changes name is one row with one refcount.
 *
 * A `Map` keyed by CID strings cost a string, a map entry and often a base32 encode or decode
 * per block; for a 100,000-record repo that was most of the time and memory between verify and
 * the database. Here an entry is 36 bytes of CID and four integers.
 */
import { CID_LENGTH } from '../atproto/cid.ts';

/** Where candidate bytes come from: a verified repo's block map, by index. */
export interface BlockSource {
  dataAt(index: number): Uint8Array;
}

/** The entries of one CID, summed. */
export interface BlockGroups {
  count: number;
  /** CIDs in byte order, 36 bytes each. */
  cids: Uint8Array;
  /** Summed refcount change. */
  delta: Float64Array;
  /** Whether the batch carries the block's bytes (a candidate for the pack). */
  carried: Uint8Array;
  /** The change that first needed the block (its index in the batch); -1 when not carried. */
  owner: Int32Array;
  /** The block's bytes; only when carried. */
  dataAt(group: number): Uint8Array;
}

export class BlockRefs {
  #cids = new Uint8Array(CID_LENGTH * 1024);
  // Per entry, side by side (grouping reads the entries in CID order, at random: one cache line
  // an entry rather than four): its refcount delta, which source holds its bytes (-1: none), its
  // index there, the change that needs it.
  #meta = new Int32Array(4 * 1024);
  #n = 0;
  readonly #sources: BlockSource[] = [];
  readonly #loose: Uint8Array[] = [];
  readonly #looseSource: BlockSource = { dataAt: (i) => this.#loose[i]! };

  constructor() {
    this.#sources.push(this.#looseSource);
  }

  get size(): number {
    return this.#n;
  }

  /** Registers a block map (or anything with `dataAt`); returns its id for {@link block}. */
  source(s: BlockSource): number {
    this.#sources.push(s);
    return this.#sources.length - 1;
  }

  /** {@link ref} of a whole 36-byte CID (RefDeltas' shape, for wipeRepoRows). */
  add(cid: Uint8Array, delta: number): void {
    this.#push(cid, 0, delta, -1, 0, -1);
  }

  /** A reference change to a block the batch does not carry (it must be indexed already). */
  ref(cid: Uint8Array, offset: number, delta: number): void {
    this.#push(cid, offset, delta, -1, 0, -1);
  }

  /** A block the batch carries, from `source` at `index`, with the references it gains (≥ 0). */
  block(cid: Uint8Array, offset: number, delta: number, source: number, index: number, owner: number): void {
    this.#push(cid, offset, delta, source, index, owner);
  }

  /** A carried block whose bytes are their own array. */
  looseBlock(cid: Uint8Array, offset: number, delta: number, data: Uint8Array, owner: number): void {
    this.#loose.push(data);
    this.#push(cid, offset, delta, 0, this.#loose.length - 1, owner);
  }

  #push(cid: Uint8Array, offset: number, delta: number, source: number, index: number, owner: number): void {
    const i = this.#n;
    if (4 * i === this.#meta.length) this.#grow();
    this.#cids.set(cid.length === CID_LENGTH && offset === 0 ? cid : cid.subarray(offset, offset + CID_LENGTH), i * CID_LENGTH);
    const meta = this.#meta;
    meta[4 * i] = delta;
    meta[4 * i + 1] = source;
    meta[4 * i + 2] = index;
    meta[4 * i + 3] = owner;
    this.#n = i + 1;
  }

  #grow(): void {
    const n = Math.max(1024, (this.#meta.length / 4) * 2);
    const cids = new Uint8Array(n * CID_LENGTH);
    cids.set(this.#cids);
    this.#cids = cids;
    const meta = new Int32Array(4 * n);
    meta.set(this.#meta);
    this.#meta = meta;
  }

  /** The entries grouped by CID, in CID byte order. Consumes them: the entries' memory is let go. */
  group(): BlockGroups {
    const n = this.#n;
    const cids = this.#cids;
    const order = sortedByCid(cids, n);
    const out = {
      cids: new Uint8Array(n * CID_LENGTH),
      delta: new Float64Array(n),
      carried: new Uint8Array(n),
      owner: new Int32Array(n),
      source: new Int32Array(n),
      index: new Int32Array(n),
    };
    const meta = this.#meta;
    const outCids = out.cids;
    let g = -1;
    for (let k = 0; k < n; k++) {
      const e = order[k]!;
      if (g < 0 || !sameCid(cids, e * CID_LENGTH, outCids, g * CID_LENGTH)) {
        g++;
        const to = g * CID_LENGTH;
        const from = e * CID_LENGTH;
        for (let b = 0; b < CID_LENGTH; b++) outCids[to + b] = cids[from + b]!;
        out.owner[g] = -1;
      }
      out.delta[g]! += meta[4 * e]!;
      const source = meta[4 * e + 1]!;
      const owner = meta[4 * e + 3]!;
      // The lowest change index among the entries that carry it: the change that first needed it.
      if (source >= 0 && (out.carried[g] === 0 || owner < out.owner[g]!)) {
        out.carried[g] = 1;
        out.owner[g] = owner;
        out.source[g] = source;
        out.index[g] = meta[4 * e + 2]!;
      }
    }
    const sources = this.#sources;
    this.#cids = new Uint8Array(0);
    this.#meta = new Int32Array(0);
    this.#n = 0;
    return {
      count: g + 1,
      cids: out.cids,
      delta: out.delta,
      carried: out.carried,
      owner: out.owner,
      dataAt: (group) => sources[out.source[group]!]!.dataAt(out.index[group]!),
    };
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
function sortedByCid(cids: Uint8Array, n: number): Int32Array {
  const order = new Int32Array(n);
  const indexBits = Math.max(20, Math.ceil(Math.log2(n + 1)));
  const digestBits = 51 - indexBits;
  let packable = digestBits >= 16;
  for (let i = 0; i < n && packable; i++) {
    const codec = cids[i * CID_LENGTH + 1];
    packable = codec === 0x71 || codec === 0x55;
  }
  if (!packable) {
    const key = new Float64Array(n);
    for (let i = 0; i < n; i++) key[i] = cids[i * CID_LENGTH + 1]! * 2 ** 32 + digest32(cids, i * CID_LENGTH);
    for (let i = 0; i < n; i++) order[i] = i;
    order.sort((a, b) => key[a]! - key[b]! || compareAt(cids, a * CID_LENGTH, b * CID_LENGTH));
    return order;
  }
  const scale = 2 ** indexBits;
  const shift = 2 ** (32 - digestBits);
  const packed = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const o = i * CID_LENGTH;
    const prefix = (cids[o + 1] === 0x71 ? 2 ** digestBits : 0) + Math.floor(digest32(cids, o) / shift);
    packed[i] = 2 ** 52 + prefix * scale + i;
  }
  packed.sort();
  // The key's low 32 bits and the 20 above them (under the sign and exponent bits, the same in every entry).
  const words = new Uint32Array(packed.buffer);
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
      const run = Array.from(order.subarray(k, end)).sort((a, b) => compareAt(cids, a * CID_LENGTH, b * CID_LENGTH) || a - b);
      order.set(run, k);
    }
    k = end;
  }
  return order;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The digest's first 32 bits, unsigned. */
function digest32(cids: Uint8Array, o: number): number {
  return ((cids[o + 4]! << 24) >>> 0) + (cids[o + 5]! << 16) + (cids[o + 6]! << 8) + cids[o + 7]!;
}

function compareAt(cids: Uint8Array, a: number, b: number): number {
  for (let i = 0; i < CID_LENGTH; i++) {
    const d = cids[a + i]! - cids[b + i]!;
    if (d !== 0) return d;
  }
  return 0;
}
