/**
 * The repository commit: decoding, field checks and the signature.
 */
import * as CBOR from '@atcute/cbor';
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
  const { version, sig, ...unsigned } = fields;
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
  return {
    did,
    version: 3,
    data: fields.data.$link,
    dataBytes: fields.data.bytes,
    rev: fields.rev,
    prev: prev instanceof CidLinkWrapper ? prev.$link : null,
    sig: sig.buf,
    // The block is canonical, so the commit without `sig`, encoded, is the canonical form that
    // was signed; it re-encoded once already, so this cannot throw.
    unsigned: CBOR.encode({ ...unsigned, version }),
  };
}

// The signature check lives beside its key cache and fast backend; callers take it from here too.
export { verifyCommitSignature } from './signature.ts';

/** A field's value for a message: bounded, since the commit is remote input. */
function shown(value: unknown): string {
  if (typeof value === 'number' && Object.is(value, -0)) return '-0';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}
