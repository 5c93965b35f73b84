/** Errors of the pack format and pack reads (storage/packs.ts). */
import { StorageError } from './errors.ts';

/** Bytes read for a block do not hash to the block's CID: the pack copy is corrupt. */
export class BlockHashMismatchError extends StorageError {
  override name = 'BlockHashMismatchError';
  /** The block's CID, base32. */
  readonly cid: string;
  readonly packKey: string;
  readonly offset: number;
  readonly length: number;
  constructor(cid: string, packKey: string, offset: number, length: number, actualSha256: string) {
    super(`block ${cid} read from ${packKey} at ${offset}+${length} does not match its CID (sha-256 is ${actualSha256})`);
    this.cid = cid;
    this.packKey = packKey;
    this.offset = offset;
    this.length = length;
  }
}

/** The block index names a pack the blobstore does not hold. */
export class PackNotFoundError extends StorageError {
  override name = 'PackNotFoundError';
  readonly packKey: string;
  constructor(packKey: string) {
    super(`pack ${packKey} is not in the blobstore`);
    this.packKey = packKey;
  }
}

/** Bytes handed to the pack writer or reader as a CID are not a binary CIDv1 with SHA-256. */
export class InvalidBlockCidError extends StorageError {
  override name = 'InvalidBlockCidError';
  constructor(reason: string) {
    super(`invalid block CID: ${reason}`);
  }
}
