/**
 * The repository commit: decoding, field checks and the signature.
 */
import { BytesWrapper } from '@atcute/cbor';
import { CidLinkWrapper } from '@atcute/cid';
import { isTid } from '@atcute/lexicons/syntax';
import type { BlockMap } from './car.ts';
import { CID_LENGTH, CODEC_DCBOR, cidFromString, cidToString, isRepoCid, latin1 } from './cid.ts';
import { DagCborError, decodeCanonical } from './dag-cbor.ts';
import { CommitError, MissingBlockError, SignatureError, boundText } from './errors.ts';

/**
 * Deepest nesting accepted in a commit. A v3 commit is one flat map; extra fields a PDS adds
 * are signed with it, but nothing legitimate nests anywhere near this.
 */
export const MAX_COMMIT_DEPTH = 32;

/** A v3 commit, with its CIDs as strings. */
export interface Commit {
  did: string;
  version: 3;
  /** CID of the MST root. */
  data: string;
  /** Its 36 bytes (set by `readCommit`). */
  dataBytes?: Uint8Array;
  /** Revision, a TID; increases with every commit. */
  rev: string;
  prev: string | null;
  sig: Uint8Array;
  /** The DAG-CBOR bytes the signature covers: the commit without `sig`. */
  unsigned: Uint8Array;
}

/**
 * Reads the commit block `cid` and checks its fields: version 3, `did` as expected, `data` a
 * CID, `rev` a TID, `prev` absent, null or a CID, `sig` bytes.
 *
 * @throws MissingBlockError the block is not in `blocks`
 * @throws CommitError wrong version (`commit-version`), another DID (`commit-did`), bytes that are
 *   not canonical DAG-CBOR (`commit-non-canonical`), anything else (`commit-malformed`: not
 *   DAG-CBOR, nested past MAX_COMMIT_DEPTH, a CID of another codec, a field of the wrong type)
 * @param cidBytes `cid` as `cidFromString` gives it, when the caller has it already
 */
export function readCommit(blocks: BlockMap, cid: string, did: string, cidBytes: Uint8Array | undefined = cidFromString(cid)): Commit {
  if (cidBytes !== undefined && cidBytes[1] !== CODEC_DCBOR) {
    // The same bytes under a raw CID would be a second name for one signed commit.
    throw new CommitError('commit-malformed', cid, 'the commit CID is not of codec dag-cbor');
  }
  const index = cidBytes === undefined ? -1 : blocks.indexOf(cidBytes);
  if (index < 0) throw new MissingBlockError(cid, 'commit');
  const bytes = blocks.dataAt(index);
  return readStandardCommit(bytes, did) ?? readAnyCommit(bytes, cid, did);
}

/**
 * `readCommit` by the general decoder: any commit, and the error that names what is wrong with
 * it (exported for the test that holds `readStandardCommit` to it).
 */
export function readAnyCommit(bytes: Uint8Array, cid: string, did: string): Commit {
  let value: unknown;
  try {
    // Canonical, so that the signature covers the block's own bytes and one signed commit has
    // one CID; depth-bounded, so that re-encoding cannot run out of stack.
    value = decodeCanonical(bytes, MAX_COMMIT_DEPTH);
  } catch (cause) {
    if (!(cause instanceof DagCborError)) throw cause;
    throw new CommitError(cause.reason === 'non-canonical' ? 'commit-non-canonical' : 'commit-malformed', cid, cause.message, { cause });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value) || value instanceof CidLinkWrapper || value instanceof BytesWrapper) {
    throw new CommitError('commit-malformed', cid, 'not a map');
  }
  const fields = value as Record<string, unknown>;
  const { version, sig } = fields;
  if (version !== 3) throw new CommitError('commit-version', cid, `version is ${shown(version)}, expected 3`);
  if (typeof fields.did !== 'string') throw new CommitError('commit-malformed', cid, 'did is missing');
  if (fields.did !== did) throw new CommitError('commit-did', cid, `names ${boundText(fields.did, 200)}, expected ${did}`);
  if (!(fields.data instanceof CidLinkWrapper)) throw new CommitError('commit-malformed', cid, 'data is not a CID link');
  if (!isTid(fields.rev)) throw new CommitError('commit-malformed', cid, `rev ${shown(fields.rev)} is not a TID`);
  const prev = fields.prev;
  if (!(prev === undefined || prev === null || prev instanceof CidLinkWrapper)) {
    throw new CommitError('commit-malformed', cid, 'prev is neither null nor a CID link');
  }
  if (!(sig instanceof BytesWrapper)) throw new CommitError('commit-malformed', cid, 'sig is missing or not bytes');
  let signed: Uint8Array | undefined;
  try {
    signed = withoutSig(bytes);
  } catch {
    // a head the decoder refuses: unreachable for the canonical bytes decoded above
  }
  if (signed === undefined) throw new CommitError('commit-malformed', cid, 'no sig entry in the commit map');
  return {
    did,
    version: 3,
    data: fields.data.$link,
    dataBytes: fields.data.bytes,
    rev: fields.rev,
    prev: prev instanceof CidLinkWrapper ? prev.$link : null,
    sig: sig.buf,
    // The block is canonical, so the commit without `sig`, encoded, is the canonical form that
    // was signed: the block's own bytes less the `sig` entry (keys keep their order).
    unsigned: signed,
  };
}

/**
 * The commit every PDS writes — exactly `{ did, rev, sig, data, prev?, version: 3 }`, ASCII text,
 * each head in its one minimal form — read straight from its bytes; undefined for anything else,
 * which `readAnyCommit` then decides (a commit with other fields, or with any field in another
 * form, or one that fails a check, such as another DID). So it accepts only bytes that the
 * general path accepts too, with the same result: one map of canonical DAG-CBOR (keys in
 * canonical order, minimal heads, links of the CIDs repos use) is what both decode and what
 * re-encoding gives back. The general path decodes, re-encodes to compare and walks the value
 * for its depth: most of reading a commit, and a firehose frame reads one.
 */
export function readStandardCommit(bytes: Uint8Array, did: string): Commit | undefined {
  const head = bytes[0];
  if (head !== 0xa6 && head !== 0xa5) return undefined;
  let pos = 1;
  // "did": its text must be the DID expected, byte for byte (ASCII).
  if (!key3(bytes, pos, 0x64, 0x69, 0x64)) return undefined;
  pos += 4;
  const didLength = textLength(bytes, pos);
  if (didLength !== did.length) return undefined;
  pos += didLength < 24 ? 1 : 2;
  for (let i = 0; i < didLength; i++) if (bytes[pos + i] !== did.charCodeAt(i) || bytes[pos + i]! >= 0x80) return undefined;
  pos += didLength;
  // "rev": ASCII text, a TID.
  if (!key3(bytes, pos, 0x72, 0x65, 0x76)) return undefined;
  pos += 4;
  const revLength = textLength(bytes, pos);
  if (revLength < 0) return undefined;
  pos += revLength < 24 ? 1 : 2;
  if (pos + revLength > bytes.length) return undefined;
  for (let i = 0; i < revLength; i++) if (bytes[pos + i]! >= 0x80) return undefined;
  const rev = latin1(bytes, pos, pos + revLength);
  if (!isTid(rev)) return undefined;
  pos += revLength;
  // "sig": bytes.
  if (!key3(bytes, pos, 0x73, 0x69, 0x67)) return undefined;
  const sigStart = pos;
  pos += 4;
  const b = bytes[pos]!;
  let sigLength: number;
  if (b >= 0x40 && b < 0x58) (sigLength = b - 0x40), (pos += 1);
  else if (b === 0x58 && bytes[pos + 1]! >= 24) (sigLength = bytes[pos + 1]!), (pos += 2);
  else return undefined;
  const sig = bytes.subarray(pos, pos + sigLength);
  pos += sigLength;
  const sigEnd = pos;
  // "data": a link.
  if (bytes[pos] !== 0x64 || bytes[pos + 1] !== 0x64 || bytes[pos + 2] !== 0x61 || bytes[pos + 3] !== 0x74 || bytes[pos + 4] !== 0x61) return undefined;
  pos += 5;
  const data = linkAt(bytes, pos);
  if (data < 0) return undefined;
  pos = data + CID_LENGTH;
  // "prev": null or a link, present in a map of six.
  let prev: string | null = null;
  if (head === 0xa6) {
    if (bytes[pos] !== 0x64 || bytes[pos + 1] !== 0x70 || bytes[pos + 2] !== 0x72 || bytes[pos + 3] !== 0x65 || bytes[pos + 4] !== 0x76) return undefined;
    pos += 5;
    if (bytes[pos] === 0xf6) pos += 1;
    else {
      const at = linkAt(bytes, pos);
      if (at < 0) return undefined;
      prev = cidToString(bytes, at);
      pos = at + CID_LENGTH;
    }
  }
  // "version": 3, and nothing after it.
  if (pos + 9 !== bytes.length || bytes[pos] !== 0x67 || latin1(bytes, pos + 1, pos + 8) !== 'version' || bytes[pos + 8] !== 0x03) return undefined;
  // The signed bytes: the map less its sig entry, under a head for one field fewer.
  const unsigned = new Uint8Array(bytes.length - (sigEnd - sigStart));
  unsigned[0] = head - 1;
  unsigned.set(bytes.subarray(1, sigStart), 1);
  unsigned.set(bytes.subarray(sigEnd), sigStart);
  return { did, version: 3, data: cidToString(bytes, data), dataBytes: bytes.subarray(data, data + CID_LENGTH), rev, prev, sig, unsigned };
}

/** Whether a three-letter text key (head 0x63) is at `pos`. */
function key3(bytes: Uint8Array, pos: number, a: number, b: number, c: number): boolean {
  return bytes[pos] === 0x63 && bytes[pos + 1] === a && bytes[pos + 2] === b && bytes[pos + 3] === c;
}

/** The length of the text string whose minimal head (one or two bytes) is at `pos`, or -1. */
function textLength(bytes: Uint8Array, pos: number): number {
  const b = bytes[pos];
  if (b === undefined) return -1;
  if (b >= 0x60 && b < 0x78) return b - 0x60;
  if (b === 0x78 && bytes[pos + 1]! >= 24) return bytes[pos + 1]!;
  return -1;
}

/** Where the CID of the link (tag 42, bytes 0x00 + a repo CID) at `pos` starts, or -1. */
function linkAt(bytes: Uint8Array, pos: number): number {
  if (bytes[pos] !== 0xd8 || bytes[pos + 1] !== 0x2a || bytes[pos + 2] !== 0x58 || bytes[pos + 3] !== CID_LENGTH + 1 || bytes[pos + 4] !== 0) return -1;
  return isRepoCid(bytes, pos + 5) ? pos + 5 : -1;
}

/**
 * The canonical map `bytes` (checked: keys distinct and sorted, minimal heads, definite lengths)
 * re-encoded without its `sig` entry: a map head for one entry fewer, then the other entries'
 * bytes as they are. Undefined if the bytes are not such a map with a `sig` key.
 */
function withoutSig(bytes: Uint8Array): Uint8Array | undefined {
  if (bytes[0]! >> 5 !== 5) return undefined;
  const [count, first] = readHead(bytes, 0);
  let pos = first;
  let sigStart = -1;
  let sigEnd = -1;
  for (let i = 0; i < count; i++) {
    const start = pos;
    const isSig = bytes[pos] === 0x63 && bytes[pos + 1] === 0x73 && bytes[pos + 2] === 0x69 && bytes[pos + 3] === 0x67;
    pos = skipItem(bytes, skipItem(bytes, pos));
    if (isSig) (sigStart = start), (sigEnd = pos);
  }
  if (sigStart < 0 || pos !== bytes.length) return undefined;
  const head = mapHead(count - 1);
  const out = new Uint8Array(head.length + (sigStart - first) + (bytes.length - sigEnd));
  out.set(head, 0);
  out.set(bytes.subarray(first, sigStart), head.length);
  out.set(bytes.subarray(sigEnd), head.length + sigStart - first);
  return out;
}

/** A canonical map head for `n` entries. */
function mapHead(n: number): Uint8Array {
  if (n < 24) return Uint8Array.of(0xa0 | n);
  if (n < 0x100) return Uint8Array.of(0xb8, n);
  if (n < 0x10000) return Uint8Array.of(0xb9, n >> 8, n & 0xff);
  return Uint8Array.of(0xba, n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
}

/** The item's head's argument and the position after the head. */
function readHead(bytes: Uint8Array, pos: number): [number, number] {
  const info = bytes[pos]! & 0x1f;
  if (info < 24) return [info, pos + 1];
  if (info === 24) return [bytes[pos + 1]!, pos + 2];
  if (info === 25) return [(bytes[pos + 1]! << 8) | bytes[pos + 2]!, pos + 3];
  if (info === 26) return [((bytes[pos + 1]! << 24) >>> 0) + ((bytes[pos + 2]! << 16) | (bytes[pos + 3]! << 8) | bytes[pos + 4]!), pos + 5];
  if (info === 27) return [Number(new DataView(bytes.buffer, bytes.byteOffset + pos + 1, 8).getBigUint64(0)), pos + 9];
  throw new Error(`a checked commit holds a CBOR head of additional info ${info}`);
}

/** The position after the (definite-length, checked) CBOR item at `pos`. */
function skipItem(bytes: Uint8Array, pos: number): number {
  const major = bytes[pos]! >> 5;
  const [arg, next] = readHead(bytes, pos);
  switch (major) {
    case 2:
    case 3:
      return next + arg;
    case 4: {
      let p = next;
      for (let i = 0; i < arg; i++) p = skipItem(bytes, p);
      return p;
    }
    case 5: {
      let p = next;
      for (let i = 0; i < 2 * arg; i++) p = skipItem(bytes, p);
      return p;
    }
    case 6:
      return skipItem(bytes, next);
    default:
      return next; // integers, simple values, floats: the head is the item
  }
}

// The signature check lives beside its key cache and fast backend; callers take it from here too.
export { verifyCommitSignature } from './signature.ts';

/** A field's value for a message: bounded, since the commit is remote input. */
function shown(value: unknown): string {
  if (typeof value === 'number' && Object.is(value, -0)) return '-0';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}
