/**
 * CARv1 reading with every block verified against its CID as it is read.
 *
 * One incremental parser serves both entry points: `readCar` feeds it one buffer,
 * `readCarStream` feeds it chunks as they arrive, so the byte cap stops a hostile download as
 * soon as it is passed and hashing overlaps the transfer. Blocks are zero-copy views into the
 * input (only an entry that straddles two chunks is copied), so the block map costs little
 * beyond the CAR bytes themselves.
 */
import { Buffer } from 'node:buffer';
import * as CBOR from '@atcute/cbor';
import { CidLinkWrapper } from '@atcute/cid';
import { BlockMap } from './block-map.ts';
import { checkBlockHash, DeferredBlockHashes } from './block-hashes.ts';
import { CID_LENGTH, cidToString, isRepoCid } from './cid.ts';
import { CarFormatError, CarTooLargeError, TooManyBlocksError } from './errors.ts';

export { BlockMap };

export interface CarCaps {
  /** Refuse a CAR longer than this many bytes. */
  maxBytes: number;
  /** Refuse a CAR with more than this many blocks (duplicates count once). */
  maxBlocks: number;
}

export const DEFAULT_CAR_CAPS: CarCaps = {
  maxBytes: 512 * 1024 * 1024,
  maxBlocks: 8_000_000,
};

export interface CarContents {
  /** First root named in the header (for a repo, the commit). */
  root: string;
  /** The same root's 36 CID bytes (set by this module's readers), to look it up without decoding `root`. */
  rootBytes?: Uint8Array;
  /** Every block, each verified against its CID (unless `unchecked` says otherwise). */
  blocks: BlockMap;
  /** Bytes of CAR read. */
  bytes: number;
  /**
   * Read with `deferHashes`: the blocks whose hashes are still to be checked (every block, in
   * CAR order, duplicates included). Until it has checked them, no block is verified.
   */
  unchecked?: DeferredBlockHashes;
}

export interface ReadOptions {
  /**
   * Leave the hash checks to the caller (`CarContents.unchecked`). Everything else is checked as
   * it is read; and when anything else is refused, the blocks before it are checked first, so
   * that the error is the one an eager read throws. A stream read this way is not stopped at its
   * first bad block, only at the caps.
   */
  deferHashes?: boolean;
}

/**
 * Reads a whole CAR held in memory.
 *
 * @throws CarFormatError framing, header or CID not acceptable, or the CAR is truncated
 * @throws BlockHashMismatchError a block's bytes do not hash to its CID
 * @throws CarTooLargeError, TooManyBlocksError a cap is passed
 */
export function readCar(bytes: Uint8Array, caps: Partial<CarCaps> = {}, options: ReadOptions = {}): CarContents {
  const parser = new CarParser(caps, undefined, options);
  parser.push(bytes);
  return parser.end();
}

/**
 * Reads a CAR from a stream of chunks. Stops pulling (and so closes the source) as soon as the
 * byte cap is passed or a block fails; the chunks must not be reused by the source afterwards,
 * since the blocks are views into them.
 *
 * @throws as `readCar`
 */
export async function readCarStream(chunks: AsyncIterable<Uint8Array>, caps: Partial<CarCaps> = {}, options: ReadOptions = {}): Promise<CarContents> {
  const parser = new CarParser(caps, undefined, options);
  for await (const chunk of chunks) parser.push(chunk);
  return parser.end();
}

/**
 * The incremental parser behind both readers: push chunks, then end.
 *
 * Complete entries are parsed where they lie in the chunk. An entry that a chunk does not
 * complete is assembled in a buffer of its own, each byte copied once, so the work is linear in
 * the bytes whatever the chunking (a hostile server may send one byte per chunk). That buffer
 * grows by doubling toward the length the entry declares rather than being allocated at that
 * length at once, so a few bytes claiming a huge entry cannot make the reader allocate it.
 */
export class CarParser {
  readonly #caps: CarCaps;
  readonly #expectedBlocks: number;
  // Made at the first chunk, sized to it: a small CAR's body is one or two chunks, and an index
  // for 1,024 blocks (44 KB, zeroed) was a tenth of verifying a ten-record repo.
  #blocks: BlockMap | undefined;
  #root: string | undefined;
  #rootBytes: Uint8Array | undefined;
  #bytes = 0;
  // The length varint of an entry, while the chunks so far hold only part of it (at most 8 bytes).
  #head: number[] = [];
  // An entry being assembled: its total length (varint included), the buffer, bytes filled.
  #entryLength = 0;
  #entry: Uint8Array | undefined;
  #filled = 0;
  #copied = 0;
  // Offset in the CAR of the next entry, for messages.
  #offset = 0;
  readonly #unchecked: DeferredBlockHashes | undefined;

  /**
   * @param expectedBlocks most room the block index starts with (it grows past it); less when
   *   the first chunk cannot hold that many blocks
   */
  constructor(caps: Partial<CarCaps> = {}, expectedBlocks = 1024, options: ReadOptions = {}) {
    this.#caps = { ...DEFAULT_CAR_CAPS, ...caps };
    this.#expectedBlocks = expectedBlocks;
    if (options.deferHashes) this.#unchecked = new DeferredBlockHashes();
  }

  /** Bytes copied so far to assemble entries that straddled chunks (each at most about twice). */
  get bytesCopied(): number {
    return this.#copied;
  }

  push(chunk: Uint8Array): void {
    if (this.#unchecked === undefined) return this.#push(chunk);
    try {
      this.#push(chunk);
    } catch (err) {
      // A bad block before what was refused is what an eager read would have refused first.
      this.#unchecked.checkNow();
      throw err;
    }
  }

  #push(chunk: Uint8Array): void {
    // A plain view: subarrays of a Node Buffer are Buffers, several times slower to make.
    if (Buffer.isBuffer(chunk)) chunk = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length);
    this.#bytes += chunk.length;
    if (this.#bytes > this.#caps.maxBytes) throw new CarTooLargeError(this.#caps.maxBytes, this.#bytes);
    // A block takes at least a CID and a length byte: a CAR that arrives whole gets an index its size.
    this.#blocks ??= new BlockMap(Math.min(this.#expectedBlocks, chunk.length / (CID_LENGTH + 1)));
    let rest = chunk;
    if (this.#head.length > 0) {
      rest = this.#completeHead(rest);
      if (this.#entry === undefined) return;
    }
    if (this.#entry !== undefined) {
      const take = Math.min(this.#entryLength - this.#filled, rest.length);
      this.#append(rest.subarray(0, take));
      if (this.#filled < this.#entryLength) return;
      const entry = this.#entry.subarray(0, this.#entryLength);
      this.#entry = undefined;
      this.#parse(entry);
      rest = rest.subarray(take);
    }
    const used = this.#parse(rest);
    if (used < rest.length) this.#completeHead(rest.subarray(used));
  }

  /**
   * Takes bytes of a pending entry's varint from `bytes`; once it is complete, starts the
   * entry's buffer with the varint and whatever of `bytes` is left (a start of an entry that
   * `#parse` left over is always shorter than the entry). Returns what the entry did not take.
   */
  #completeHead(bytes: Uint8Array): Uint8Array {
    const head = this.#head;
    let i = 0;
    while (i < bytes.length) {
      const byte = bytes[i++]!;
      head.push(byte);
      if ((byte & 0x80) !== 0) {
        if (head.length >= 8) throw new CarFormatError(`CAR entry length varint is too long at byte ${this.#offset}`);
        continue;
      }
      let length = 0;
      for (let k = 0; k < head.length; k++) length += (head[k]! & 0x7f) * 2 ** (7 * k);
      if (length > this.#caps.maxBytes) throw new CarTooLargeError(this.#caps.maxBytes, this.#bytes);
      this.#entryLength = head.length + length;
      this.#entry = new Uint8Array(Math.min(this.#entryLength, Math.max(64 * 1024, 2 * bytes.length)));
      this.#filled = 0;
      this.#append(Uint8Array.from(head));
      this.#head = [];
      // The entry is longer than what remains of `bytes` when #parse left it, so it takes it all.
      const take = Math.min(this.#entryLength - this.#filled, bytes.length - i);
      this.#append(bytes.subarray(i, i + take));
      return bytes.subarray(i + take);
    }
    return bytes.subarray(bytes.length);
  }

  #append(bytes: Uint8Array): void {
    let entry = this.#entry!;
    const need = this.#filled + bytes.length;
    if (need > entry.length) {
      const grown = new Uint8Array(Math.min(this.#entryLength, Math.max(need, entry.length * 2)));
      grown.set(entry.subarray(0, this.#filled));
      this.#copied += this.#filled;
      entry = this.#entry = grown;
    }
    entry.set(bytes, this.#filled);
    this.#filled = need;
    this.#copied += bytes.length;
  }

  end(): CarContents {
    const pending = this.#head.length + (this.#entry === undefined ? 0 : this.#filled);
    if (pending > 0) {
      this.#unchecked?.checkNow();
      throw new CarFormatError(`CAR is truncated: ${pending} bytes of an incomplete entry at the end`);
    }
    if (this.#root === undefined) throw new CarFormatError('CAR is empty: no header');
    this.#blocks!.trim();
    const contents: CarContents = { root: this.#root, rootBytes: this.#rootBytes, blocks: this.#blocks!, bytes: this.#bytes };
    if (this.#unchecked) contents.unchecked = this.#unchecked;
    return contents;
  }

  /** Parses the complete entries at the start of `buf`; returns how many bytes they took. */
  #parse(buf: Uint8Array): number {
    let pos = 0;
    const end = buf.length;
    while (pos < end) {
      // Inline varint: entry length, at most 8 bytes (53 bits) like every CAR reader.
      let length = 0;
      let shift = 0;
      let p = pos;
      let complete = false;
      while (p < end) {
        const byte = buf[p++]!;
        length += (byte & 0x7f) * 2 ** shift;
        if ((byte & 0x80) === 0) {
          complete = true;
          break;
        }
        shift += 7;
        if (shift >= 56) throw new CarFormatError(`CAR entry length varint is too long at byte ${this.#offset}`);
      }
      if (!complete || p + length > end) {
        if (length > this.#caps.maxBytes) throw new CarTooLargeError(this.#caps.maxBytes, this.#bytes);
        return pos;
      }
      if (this.#root === undefined) this.#header(buf.subarray(p, p + length));
      else this.#block(buf, p, length);
      this.#offset += p + length - pos;
      pos = p + length;
    }
    return pos;
  }

  #header(bytes: Uint8Array): void {
    // The header nearly every CAR has, `{ roots: [root], version: 1 }` in canonical DAG-CBOR, read
    // from its bytes (it decodes to just that, so the decoder would accept it alike); any other
    // header by the decoder.
    if (bytes.length === STANDARD_HEADER.length && isRepoCid(bytes, HEADER_ROOT_AT) && matchesStandardHeader(bytes)) {
      this.#root = cidToString(bytes, HEADER_ROOT_AT);
      this.#rootBytes = bytes.subarray(HEADER_ROOT_AT, HEADER_ROOT_AT + CID_LENGTH);
      return;
    }
    let header: unknown;
    try {
      header = CBOR.decode(bytes);
    } catch (cause) {
      throw new CarFormatError(`CAR header is not valid DAG-CBOR: ${(cause as Error).message}`, { cause });
    }
    const h = header as { version?: unknown; roots?: unknown } | null;
    if (typeof h !== 'object' || h === null || h.version !== 1) {
      throw new CarFormatError('CAR header is not a CARv1 header (version 1)');
    }
    const roots = h.roots;
    if (!Array.isArray(roots) || roots.length === 0 || !(roots[0] instanceof CidLinkWrapper)) {
      throw new CarFormatError('CAR header names no root CID');
    }
    this.#root = roots[0].$link;
    this.#rootBytes = roots[0].bytes;
  }

  #block(buf: Uint8Array, start: number, length: number): void {
    if (length < CID_LENGTH) {
      throw new CarFormatError(`CAR entry at byte ${this.#offset} is ${length} bytes, too short to hold a CID`);
    }
    if (!isRepoCid(buf, start)) {
      const head = Buffer.from(buf.subarray(start, start + 4)).toString('hex');
      throw new CarFormatError(
        `CAR entry at byte ${this.#offset} has an unsupported CID (prefix ${head}); expected CIDv1, dag-cbor or raw, sha-256`,
      );
    }
    const end = start + length;
    const unchecked = this.#unchecked;
    if (unchecked === undefined) checkBlockHash(buf, start, end);
    const blocks = this.#blocks!;
    const added = blocks.add(buf, start, end);
    // Deferred, a block the map took is checked from there; a duplicate, from where it lies.
    if (unchecked !== undefined) {
      if (added) unchecked.held(blocks);
      else unchecked.add(buf, start, end);
    }
    if (added && blocks.size > this.#caps.maxBlocks) throw new TooManyBlocksError(this.#caps.maxBlocks);
  }
}

// `{ roots: [link], version: 1 }`: map of 2, "roots", array of 1, tag 42, bytes(37), 0x00, the
// root's 36 bytes (zero here), "version", 1.
const HEADER_ROOT_AT = 13;
const STANDARD_HEADER = Uint8Array.of(0xa2, 0x65, 0x72, 0x6f, 0x6f, 0x74, 0x73, 0x81, 0xd8, 0x2a, 0x58, 0x25, 0x00, ...new Uint8Array(CID_LENGTH), 0x67, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e, 0x01);

function matchesStandardHeader(bytes: Uint8Array): boolean {
  for (let i = 0; i < HEADER_ROOT_AT; i++) if (bytes[i] !== STANDARD_HEADER[i]) return false;
  for (let i = HEADER_ROOT_AT + CID_LENGTH; i < STANDARD_HEADER.length; i++) if (bytes[i] !== STANDARD_HEADER[i]) return false;
  return true;
}
