/**
 * Why a repository CAR was refused. Every class carries a machine `code` so callers branch on
 * type or code, and a message that names the cause (the CID, the key, the limit) for the
 * repo's recorded error state.
 *
 * All of them extend `InvalidRepoError`: catching that one class separates "this repo is bad"
 * from bugs and infrastructure failures, which must not be recorded against the repo.
 */

export type InvalidRepoCode =
  | 'car-format'
  | 'car-too-large'
  | 'car-too-many-blocks'
  | 'block-hash-mismatch'
  | 'missing-block'
  | 'record-malformed'
  | CommitErrorCode
  | SignatureErrorCode
  | MstErrorCode;

/**
 * Longest message kept: it quotes remote input (CIDs, keys, field values, decoder complaints)
 * and ends up in the repo's recorded state, so a hostile repo must not choose its size.
 */
export const MAX_ERROR_TEXT = 1000;

/** `text` cut to `max` characters, marked as cut. */
export function boundText(text: string, max = MAX_ERROR_TEXT): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export class InvalidRepoError extends Error {
  override name = 'InvalidRepoError';
  readonly code: InvalidRepoCode;
  constructor(code: InvalidRepoCode, message: string, options?: ErrorOptions) {
    super(boundText(message), options);
    this.code = code;
  }
}

/** The bytes are not a CARv1 of SHA-256 CIDv1 blocks: bad framing, header, CID or truncation. */
export class CarFormatError extends InvalidRepoError {
  override name = 'CarFormatError';
  constructor(message: string, options?: ErrorOptions) {
    super('car-format', message, options);
  }
}

/** The CAR passed the byte cap; the reader stopped as soon as it did. */
export class CarTooLargeError extends InvalidRepoError {
  override name = 'CarTooLargeError';
  readonly limit: number;
  /** Bytes read when the cap was passed (at least `limit + 1`). */
  readonly seen: number;
  constructor(limit: number, seen: number) {
    super('car-too-large', `CAR is larger than the cap of ${limit} bytes (read ${seen} bytes so far)`);
    this.limit = limit;
    this.seen = seen;
  }
}

/** The CAR holds more blocks than the cap allows. */
export class TooManyBlocksError extends InvalidRepoError {
  override name = 'TooManyBlocksError';
  readonly limit: number;
  constructor(limit: number) {
    super('car-too-many-blocks', `CAR holds more than the cap of ${limit} blocks`);
    this.limit = limit;
  }
}

/** A block's bytes do not hash to the CID it was stored under. */
export class BlockHashMismatchError extends InvalidRepoError {
  override name = 'BlockHashMismatchError';
  readonly cid: string;
  constructor(cid: string) {
    super('block-hash-mismatch', `block ${cid}: bytes do not hash to the CID`);
    this.cid = cid;
  }
}

/** What a missing block was needed as. */
export type BlockRole = 'commit' | 'mst-node' | 'record';

/** A block the commit reaches (the commit itself, an MST node, a record) is not in the CAR. */
export class MissingBlockError extends InvalidRepoError {
  override name = 'MissingBlockError';
  readonly cid: string;
  readonly role: BlockRole;
  /** The record path, for a missing record block. */
  readonly path: string | undefined;
  constructor(cid: string, role: BlockRole, path?: string) {
    super('missing-block', `missing ${role} block ${cid}${path === undefined ? '' : ` for ${path}`}`);
    this.cid = cid;
    this.role = role;
    this.path = path;
  }
}

/** A record block is not a DAG-CBOR map (found when its contents are read, not by `verifyRepo`). */
export class RecordError extends InvalidRepoError {
  override name = 'RecordError';
  constructor(message: string, options?: ErrorOptions) {
    super('record-malformed', message, options);
  }
}

export type CommitErrorCode = 'commit-version' | 'commit-did' | 'commit-malformed' | 'commit-non-canonical';

/** The root block is not an acceptable v3 commit of the expected DID. */
export class CommitError extends InvalidRepoError {
  override name = 'CommitError';
  override readonly code: CommitErrorCode;
  readonly cid: string;
  constructor(code: CommitErrorCode, cid: string, message: string, options?: ErrorOptions) {
    super(code, `commit ${cid}: ${message}`, options);
    this.code = code;
    this.cid = cid;
  }
}

export type SignatureErrorCode = 'signature-invalid' | 'signing-key-invalid';

/** The commit's signature does not verify, or the signing key cannot be used at all. */
export class SignatureError extends InvalidRepoError {
  override name = 'SignatureError';
  override readonly code: SignatureErrorCode;
  constructor(code: SignatureErrorCode, message: string, options?: ErrorOptions) {
    super(code, message, options);
    this.code = code;
  }
}

export type MstErrorCode =
  /** a node is not a valid MST node (shape, prefix length, non-ASCII key bytes) */
  | 'mst-malformed'
  /** keys are not strictly ascending in tree order */
  | 'mst-unsorted'
  /** a key sits on a layer other than the one its hash gives, or a subtree skips a layer */
  | 'mst-layer'
  /** a key is not a valid `collection/rkey` path */
  | 'mst-path'
  /** the tree is taller than the cap */
  | 'mst-depth'
  /** the tree holds the keys correctly but is not the one canonical tree for them */
  | 'mst-non-canonical';

/** The MST under the commit breaks an invariant. Names the node and, where one applies, the key. */
export class MstError extends InvalidRepoError {
  override name = 'MstError';
  override readonly code: MstErrorCode;
  /** CID of the MST node where the fault was found. */
  readonly cid: string;
  readonly key: string | undefined;
  constructor(code: MstErrorCode, cid: string, message: string, key?: string) {
    super(code, `mst node ${cid}: ${message}${key === undefined ? '' : ` (key ${JSON.stringify(key)})`}`);
    this.code = code;
    this.cid = cid;
    this.key = key;
  }
}
