/**
 * Decodes one MST node in place: positions into its bytes, no objects per CID or key.
 *
 * A node is canonical DAG-CBOR of exactly `{ e: [{ k, p, t, v }], l }` (map keys in canonical
 * order: `e` before `l`, and `k p t v`), so its byte layout is fixed and a small strict reader
 * replaces the generic decoder — which would build a map, a bytes wrapper per key and a CID
 * wrapper per link, only for the walk to turn them back into bytes. Anything else — another
 * field, another order, a non-minimal integer, a CID of another kind — is refused: the reference
 * encoder never writes it, and the node's CID would then not be the canonical one.
 */
import { CID_LENGTH, isRepoCid } from './cid.ts';

export interface MstNode {
  /** Offset of the left subtree's 36 CID bytes, or -1 when there is none. */
  left: number;
  count: number;
  /**
   * `count` entries of `ENTRY_FIELDS` numbers each, at `i * ENTRY_FIELDS + field`: flat rather
   * than an object per entry, because a 100,000-record repo would otherwise make 100,000
   * short-lived objects for the walk to read five numbers from.
   */
  entries: Int32Array;
}

export const ENTRY_FIELDS = 5;
/** Bytes shared with the previous key in this node. */
export const PREFIX = 0;
/** The rest of the key is `bytes[KEY_START..KEY_END]`. */
export const KEY_START = 1;
export const KEY_END = 2;
/** Offset of the record's 36 CID bytes. */
export const VALUE = 3;
/** Offset of the right subtree's CID bytes, or -1. */
export const RIGHT = 4;

/** Why bytes are not an MST node; the walk wraps it in an `MstError` naming the node. */
export class MstNodeFormatError extends Error {
  override name = 'MstNodeFormatError';
}

// Map of 2, text "e"; text "l"; map of 4, text "k"/"p"/"t"/"v"; null; tag 42.
const MAP2 = 0xa2;
const MAP4 = 0xa4;
const TEXT1 = 0x61;
const NULL = 0xf6;
const TAG = 0xd8;
const TAG_CID = 0x2a;

/**
 * Decodes `bytes`, writing the entries into `into` when it is large enough (the walk reuses one
 * array per layer).
 *
 * @throws MstNodeFormatError
 */
export function decodeMstNode(bytes: Uint8Array, into?: Int32Array): MstNode {
  const r = { bytes, pos: 0 };
  expectByte(r, MAP2, 'a map of two fields');
  expectKey(r, 0x65 /* e */);
  const count = readHead(r, 4, 'the entry array');
  // Each entry takes at least 50 bytes; refuse a count the bytes cannot hold before allocating.
  if (count * 50 > bytes.length) throw new MstNodeFormatError(`entry count ${count} is more than the node's bytes can hold`);
  const entries = into !== undefined && into.length >= count * ENTRY_FIELDS ? into : new Int32Array(Math.max(64, count) * ENTRY_FIELDS);
  for (let i = 0; i < count; i++) {
    expectByte(r, MAP4, 'as a map of four fields', i);
    expectKey(r, 0x6b /* k */);
    const keyLength = readHead(r, 2, 'key bytes', i);
    const keyStart = r.pos;
    r.pos += keyLength;
    if (r.pos > bytes.length) throw new MstNodeFormatError('truncated');
    expectKey(r, 0x70 /* p */);
    const prefix = readHead(r, 0, 'prefix length', i);
    expectKey(r, 0x74 /* t */);
    const right = readLink(r, true);
    expectKey(r, 0x76 /* v */);
    const value = readLink(r, false);
    const at = i * ENTRY_FIELDS;
    entries[at + PREFIX] = prefix;
    entries[at + KEY_START] = keyStart;
    entries[at + KEY_END] = keyStart + keyLength;
    entries[at + VALUE] = value;
    entries[at + RIGHT] = right;
  }
  expectKey(r, 0x6c /* l */);
  const left = readLink(r, true);
  if (r.pos !== bytes.length) throw new MstNodeFormatError(`${bytes.length - r.pos} bytes after the node`);
  return { left, count, entries };
}

interface Reader {
  bytes: Uint8Array;
  pos: number;
}

// `what` names the thing read; with `entry`, it is that entry's: the message is made only when
// thrown (a template string per entry read was a fair part of decoding a node).
const named = (what: string, entry: number) => (entry < 0 ? what : `entry ${entry} ${what}`);

function expectByte(r: Reader, byte: number, what: string, entry = -1): void {
  if (r.bytes[r.pos] !== byte) throw new MstNodeFormatError(`expected ${named(what, entry)} at byte ${r.pos}`);
  r.pos++;
}

function expectKey(r: Reader, letter: number): void {
  if (r.bytes[r.pos] !== TEXT1 || r.bytes[r.pos + 1] !== letter) {
    throw new MstNodeFormatError(`expected field "${String.fromCharCode(letter)}" at byte ${r.pos}`);
  }
  r.pos += 2;
}

/** A CBOR head of `major` type with its argument in minimal form (up to 32 bits). */
function readHead(r: Reader, major: number, what: string, entry = -1): number {
  const bytes = r.bytes;
  const first = bytes[r.pos];
  if (first === undefined || first >> 5 !== major) throw new MstNodeFormatError(`expected ${named(what, entry)} at byte ${r.pos}`);
  const info = first & 0x1f;
  r.pos++;
  if (info < 24) return info;
  let value: number;
  let min: number;
  if (info === 24) {
    value = bytes[r.pos]!;
    r.pos += 1;
    min = 24;
  } else if (info === 25) {
    value = (bytes[r.pos]! << 8) | bytes[r.pos + 1]!;
    r.pos += 2;
    min = 0x100;
  } else if (info === 26) {
    value = ((bytes[r.pos]! << 24) | (bytes[r.pos + 1]! << 16) | (bytes[r.pos + 2]! << 8) | bytes[r.pos + 3]!) >>> 0;
    r.pos += 4;
    min = 0x10000;
  } else {
    throw new MstNodeFormatError(`${named(what, entry)} at byte ${r.pos - 1} is too large or indefinite`);
  }
  if (r.pos > bytes.length) throw new MstNodeFormatError('truncated');
  if (value < min) throw new MstNodeFormatError(`${named(what, entry)} at byte ${r.pos - 1} is not minimally encoded`);
  return value;
}

/** Tag 42 over bytes 0x00 + CID; returns the CID's offset, or -1 for null where allowed. */
function readLink(r: Reader, nullable: boolean): number {
  const bytes = r.bytes;
  const at = r.pos;
  if (nullable && bytes[at] === NULL) {
    r.pos++;
    return -1;
  }
  // Tag 42, byte string of 37 (0x58 0x25), the identity multibase prefix 0x00, then the CID.
  if (bytes[at] !== TAG || bytes[at + 1] !== TAG_CID || bytes[at + 2] !== 0x58 || bytes[at + 3] !== CID_LENGTH + 1 || bytes[at + 4] !== 0) {
    throw new MstNodeFormatError(`expected a ${nullable ? 'null or ' : ''}CID link at byte ${at}`);
  }
  if (!isRepoCid(bytes, at + 5)) throw new MstNodeFormatError(`unsupported CID at byte ${at + 5}`);
  r.pos = at + 5 + CID_LENGTH;
  return at + 5;
}
