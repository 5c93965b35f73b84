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
import { hash } from 'node:crypto';
import * as CBOR from '@atcute/cbor';
import { CidLinkWrapper } from '@atcute/cid';
import { BlockMap } from './block-map.ts';
import { CID_LENGTH, cidToString, isRepoCid } from './cid.ts';
import { BlockHashMismatchError, CarFormatError, CarTooLargeError, TooManyBlocksError } from './errors.ts';

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
  /** Every block, each verified against its CID. */
  blocks: BlockMap;
  /** Bytes of CAR read. */
  bytes: number;
}

/**
 * Reads a whole CAR held in memory.
 *
 * @throws CarFormatError framing, header or CID not acceptable, or the CAR is truncated
 * @throws BlockHashMismatchError a block's bytes do not hash to its CID
 * @throws CarTooLargeError, TooManyBlocksError a cap is passed
 */
export function readCar(bytes: Uint8Array, caps: Partial<CarCaps> = {}): CarContents {
  const parser = new CarParser(caps);
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
export async function readCarStream(chunks: AsyncIterable<Uint8Array>, caps: Partial<CarCaps> = {}): Promise<CarContents> {
  const parser = new CarParser(caps);
  for await (const chunk of chunks) parser.push(chunk);
  return parser.end();
}

/** The incremental parser behind both readers: push chunks, then end. */
export class CarParser {
  readonly #caps: CarCaps;
  readonly #blocks = new BlockMap();
  #root: string | undefined;
  #bytes = 0;
  // Bytes of an entry that the chunks so far did not complete.
  #pending: Uint8Array[] = [];
  #pendingLength = 0;
  // Offset in the CAR of the next entry, for messages.
  #offset = 0;

  constructor(caps: Partial<CarCaps> = {}) {
    this.#caps = { ...DEFAULT_CAR_CAPS, ...caps };
  }

  push(chunk: Uint8Array): void {
    // A plain view: subarrays of a Node Buffer are Buffers, several times slower to make.
    if (Buffer.isBuffer(chunk)) chunk = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length);
    this.#bytes += chunk.length;
    if (this.#bytes > this.#caps.maxBytes) throw new CarTooLargeError(this.#caps.maxBytes, this.#bytes);
    if (chunk.length === 0) return;
    let rest = chunk;
    if (this.#pendingLength > 0) {
      const needed = this.#entryLengthAcross(chunk);
      if (needed !== undefined && needed > this.#caps.maxBytes) throw new CarTooLargeError(this.#caps.maxBytes, this.#bytes);
      if (needed === undefined || this.#pendingLength + chunk.length < needed) {
        this.#pending.push(chunk);
        this.#pendingLength += chunk.length;
        return;
      }
      // Copy only the one entry that straddles the chunk boundary.
      const take = needed - this.#pendingLength;
      this.#pending.push(chunk.subarray(0, take));
      const joined = Buffer.concat(this.#pending, needed);
      const entry = new Uint8Array(joined.buffer, joined.byteOffset, needed);
      this.#pending = [];
      this.#pendingLength = 0;
      this.#parse(entry);
      rest = chunk.subarray(take);
    }
    const used = this.#parse(rest);
    if (used < rest.length) {
      this.#pending.push(rest.subarray(used));
      this.#pendingLength = rest.length - used;
    }
  }

  end(): CarContents {
    if (this.#pendingLength > 0) {
      throw new CarFormatError(`CAR is truncated: ${this.#pendingLength} bytes of an incomplete entry at the end`);
    }
    if (this.#root === undefined) throw new CarFormatError('CAR is empty: no header');
    return { root: this.#root, blocks: this.#blocks, bytes: this.#bytes };
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
    // The digest as a one-byte string ('binary' is latin1): about twice as fast as a Buffer for
    // small blocks, which are most of them, and a Buffer per block was most of verify's garbage.
    const digest = hash('sha256', buf.subarray(start + CID_LENGTH, end), 'binary');
    for (let i = 0; i < 32; i++) {
      if (digest.charCodeAt(i) !== buf[start + 4 + i]) throw new BlockHashMismatchError(cidToString(buf, start));
    }
    const blocks = this.#blocks;
    if (blocks.add(buf, start, end) && blocks.size > this.#caps.maxBlocks) throw new TooManyBlocksError(this.#caps.maxBlocks);
  }

  /** Total length (varint + entry) of the pending entry, once the varint is complete. */
  #entryLengthAcross(chunk: Uint8Array): number | undefined {
    let length = 0;
    let shift = 0;
    let read = 0;
    for (const part of [...this.#pending, chunk]) {
      for (let i = 0; i < part.length; i++) {
        const byte = part[i]!;
        read++;
        length += (byte & 0x7f) * 2 ** shift;
        if ((byte & 0x80) === 0) return read + length;
        shift += 7;
        if (shift >= 56) throw new CarFormatError('CAR entry length varint is too long');
      }
    }
    return undefined;
  }
}
