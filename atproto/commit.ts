/**
 * The repository commit: decoding, field checks and the signature.
 */
import { BytesWrapper } from '@atcute/cbor';
import { CidLinkWrapper } from '@atcute/cid';
import { isTid } from '@atcute/lexicons/syntax';
import type { BlockMap } from './car.ts';
import { CODEC_DCBOR, cidFromString } from './cid.ts';
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
