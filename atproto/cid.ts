/**
 * The CIDs atproto repositories use — CIDv1, dag-cbor or raw, SHA-256: always 36 bytes — read
 * in place from the buffers that hold them.
 *
 * Hand-written because it is the hot path: a 100,000-record repo turns some 230,000 CIDs into
 * strings, and writing the base32 into one scratch buffer and decoding it once is several times
 * faster than building the string piecewise (a flat string also hashes at once as a Map key).
 */
import { Buffer } from 'node:buffer';
import * as CID from '@atcute/cid';
import { fromBase32 } from '@atcute/multibase';

export const CID_LENGTH = 36;

/** Whether two binary repo CIDs are the same (their first CID_LENGTH bytes; false when either is shorter). */
export function equalCid(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length < CID_LENGTH || b.length < CID_LENGTH) return false;
  // From the digest's last byte: another CID differs at once.
  for (let i = CID_LENGTH - 1; i >= 0; i--) if (a[i] !== b[i]) return false;
  return true;
}
export const CODEC_DCBOR = 0x71;
export const CODEC_RAW = 0x55;

/** Whether the 36 bytes at `offset` start like a CIDv1 of codec dag-cbor or raw with SHA-256. */
export function isRepoCid(bytes: Uint8Array, offset: number): boolean {
  const codec = bytes[offset + 1];
  return (
    offset + CID_LENGTH <= bytes.length &&
    bytes[offset] === 0x01 &&
    (codec === CODEC_DCBOR || codec === CODEC_RAW) &&
    bytes[offset + 2] === 0x12 &&
    bytes[offset + 3] === 0x20
  );
}

const ALPHABET = new TextEncoder().encode('abcdefghijklmnopqrstuvwxyz234567');
// 'b' (the base32 multibase prefix) and 58 base32 characters for 36 bytes.
const scratch = Buffer.alloc(59);
scratch[0] = 0x62;

/** The string form (`b…`, base32, as in `$link`) of the 36-byte CID at `offset`. */
export function cidToString(bytes: Uint8Array, offset: number): string {
  const out = scratch;
  const a = ALPHABET;
  let j = 1;
  // Seven groups of 5 bytes → 8 characters each, then the last byte → 2 characters.
  for (let i = offset, end = offset + 35; i < end; i += 5) {
    const b0 = bytes[i]!;
    const b1 = bytes[i + 1]!;
    const b2 = bytes[i + 2]!;
    const b3 = bytes[i + 3]!;
    const b4 = bytes[i + 4]!;
    out[j] = a[b0 >>> 3]!;
    out[j + 1] = a[((b0 << 2) | (b1 >>> 6)) & 31]!;
    out[j + 2] = a[(b1 >>> 1) & 31]!;
    out[j + 3] = a[((b1 << 4) | (b2 >>> 4)) & 31]!;
    out[j + 4] = a[((b2 << 1) | (b3 >>> 7)) & 31]!;
    out[j + 5] = a[(b3 >>> 2) & 31]!;
    out[j + 6] = a[((b3 << 3) | (b4 >>> 5)) & 31]!;
    out[j + 7] = a[b4 & 31]!;
    j += 8;
  }
  const last = bytes[offset + 35]!;
  out[57] = a[last >>> 3]!;
  out[58] = a[(last << 2) & 31]!;
  return latin1(out, 0, 59);
}

/** The 36 bytes of a CID string, or undefined if it is not a CID of the kind repos use. */
export function cidFromString(cid: string): Uint8Array | undefined {
  // A repo CID is 'b' and 58 base32 characters: decoded straight, without a CID object (whose
  // views were most of what checking a firehose commit allocated). Anything else, or a string
  // the decoder refuses, takes the general parser, which decides as before.
  if (cid.length === 59 && cid.charCodeAt(0) === 0x62) {
    try {
      const raw = fromBase32(cid.slice(1));
      if (raw.length === CID_LENGTH) return isRepoCid(raw, 0) ? raw : undefined;
    } catch {
      // the general parser names nothing either: undefined below
    }
  }
  let bytes: Uint8Array;
  try {
    bytes = CID.fromString(cid).bytes;
  } catch {
    return undefined;
  }
  return bytes.length === CID_LENGTH && isRepoCid(bytes, 0) ? bytes : undefined;
}

/**
 * The 36 bytes of a base32 CID string (`b…`) that verification has already accepted, decoded
 * straight from base32 with no checks: the importer's hot path, where `cidFromString` would
 * parse and validate each of some 230,000 CIDs again.
 */
export function cidBytes(cid: string): Buffer {
  const raw = fromBase32(cid.slice(1));
  return Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
}

// Node's Buffer has a native one-byte decoder (undocumented but long-standing; @atcute's UTF-8
// reader uses its sibling utf8Slice). One char per byte, so byte offsets stay string indices.
const latin1Slice = (Buffer.prototype as unknown as { latin1Slice(this: Uint8Array, start: number, end: number): string })
  .latin1Slice;

/** Bytes `start..end` as a string of one char per byte (ASCII stays ASCII; nothing is refused). */
export function latin1(bytes: Uint8Array, start: number, end: number): string {
  return latin1Slice.call(bytes, start, end);
}
