/**
 * The repository commit: decoding, field checks and the signature.
 */
import * as CBOR from '@atcute/cbor';
import { BytesWrapper } from '@atcute/cbor';
import { CidLinkWrapper } from '@atcute/cid';
import { type FoundPublicKey, parseDidKey, parsePublicMultikey, verifySig } from '@atcute/crypto';
import { isTid } from '@atcute/lexicons/syntax';
import type { BlockMap } from './car.ts';
import { CommitError, MissingBlockError, SignatureError } from './errors.ts';

/** A v3 commit, with its CIDs as strings. */
export interface Commit {
  did: string;
  version: 3;
  /** CID of the MST root. */
  data: string;
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
 * @throws CommitError wrong version (`commit-version`), another DID (`commit-did`), anything
 *   else (`commit-malformed`)
 */
export function readCommit(blocks: BlockMap, cid: string, did: string): Commit {
  const bytes = blocks.get(cid);
  if (bytes === undefined) throw new MissingBlockError(cid, 'commit');
  let value: unknown;
  try {
    value = CBOR.decode(bytes);
  } catch (cause) {
    throw new CommitError('commit-malformed', cid, `not valid DAG-CBOR: ${(cause as Error).message}`, { cause });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new CommitError('commit-malformed', cid, 'not a map');
  }
  const fields = value as Record<string, unknown>;
  const { version, sig, ...unsigned } = fields;
  if (version !== 3) throw new CommitError('commit-version', cid, `version is ${JSON.stringify(version)}, expected 3`);
  if (typeof fields.did !== 'string') throw new CommitError('commit-malformed', cid, 'did is missing');
  if (fields.did !== did) throw new CommitError('commit-did', cid, `names ${fields.did}, expected ${did}`);
  if (!(fields.data instanceof CidLinkWrapper)) throw new CommitError('commit-malformed', cid, 'data is not a CID link');
  if (!isTid(fields.rev)) throw new CommitError('commit-malformed', cid, `rev ${JSON.stringify(fields.rev)} is not a TID`);
  const prev = fields.prev;
  if (!(prev === undefined || prev === null || prev instanceof CidLinkWrapper)) {
    throw new CommitError('commit-malformed', cid, 'prev is neither null nor a CID link');
  }
  if (!(sig instanceof BytesWrapper)) throw new CommitError('commit-malformed', cid, 'sig is missing or not bytes');
  return {
    did,
    version: 3,
    data: fields.data.$link,
    rev: fields.rev,
    prev: prev instanceof CidLinkWrapper ? prev.$link : null,
    sig: sig.buf,
    // Decoding was strict (canonical DAG-CBOR), so re-encoding without `sig` gives back exactly
    // the bytes that were signed.
    unsigned: CBOR.encode({ ...unsigned, version }),
  };
}

/**
 * Checks the commit's signature with the repo's atproto signing key (secp256k1 or P-256), as a
 * `did:key:` or a bare multikey (`publicKeyMultibase` of the DID document). High-S secp256k1
 * signatures are refused, as the reference implementation does.
 *
 * @throws SignatureError the key cannot be parsed (`signing-key-invalid`) or the signature does
 *   not verify (`signature-invalid`)
 */
export async function verifyCommitSignature(commit: Commit, commitCid: string, signingKey: string): Promise<void> {
  const key = parseSigningKey(signingKey);
  let valid: boolean;
  try {
    valid = await verifySig(key, commit.sig as Uint8Array<ArrayBuffer>, commit.unsigned as Uint8Array<ArrayBuffer>);
  } catch {
    valid = false;
  }
  if (!valid) {
    throw new SignatureError('signature-invalid', `commit ${commitCid}: signature does not verify with ${key.type} key ${signingKey}`);
  }
}

function parseSigningKey(signingKey: string): FoundPublicKey {
  try {
    return signingKey.startsWith('did:key:') ? parseDidKey(signingKey) : parsePublicMultikey(signingKey);
  } catch (cause) {
    throw new SignatureError('signing-key-invalid', `signing key ${JSON.stringify(signingKey)} is not a secp256k1 or P-256 key: ${(cause as Error).message}`, {
      cause,
    });
  }
}
