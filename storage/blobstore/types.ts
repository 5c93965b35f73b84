/**
 * The blobstore: where packs (CARv1 files of blocks) and blobs live. Keys are `/`-separated
 * segments of `[A-Za-z0-9._,%=+-]` (`validateKey` in `storage/keys.ts`); every key repowalk
 * writes is content-derived (see `storage/keys.ts`), so a reader can check bytes against the key.
 *
 * Three implementations share this contract and one test suite: a local directory, S3, and a
 * multiplex over N components.
 */
export interface BlobStore {
  /** Short name for logs and findings, e.g. `local:/var/lib/repowalk/blobs` or `s3:bucket-a`. */
  readonly name: string;

  /** The whole object, or `null` when the key does not exist. */
  get(key: string): Promise<Uint8Array | null>;

  /**
   * `length` bytes starting at `offset`, or `null` when the key does not exist. A range that
   * runs past the end is an error ({@link RangeNotSatisfiableError}), never a short read.
   */
  getRange(key: string, offset: number, length: number): Promise<Uint8Array | null>;

  /**
   * Reads `target.length` bytes starting at `offset` into `target` (a caller's buffer, reused
   * across reads, so a large object can be read a range at a time with no allocation per
   * range). True when filled; false when the key does not exist (`target` then holds nothing
   * meaningful, nor after an error). A range that runs past the end is an error
   * ({@link RangeNotSatisfiableError}), never a short read.
   */
  readInto(key: string, offset: number, target: Uint8Array): Promise<boolean>;

  /**
   * Writes the object, given whole or as a {@link ByteSource} (read a piece at a time, so that
   * an object made of views into other memory, such as a pack of a CAR's blocks, is never
   * copied whole). Writing identical bytes to an existing key succeeds and changes nothing.
   * A source that fails, or does not give exactly `size` bytes, fails the put with nothing
   * written under the key (an existing object stays as it was).
   */
  put(key: string, body: Uint8Array | ByteSource): Promise<void>;

  /** Whether the key exists. */
  has(key: string): Promise<boolean>;

  /** Size in bytes, or `null` when the key does not exist. */
  stat(key: string): Promise<{ size: number } | null>;

  /** Removes the key; removing a missing key succeeds. */
  delete(key: string): Promise<void>;

  /**
   * Keys under `prefix` in ascending byte order, at most `limit` (default 1000) per page.
   * Pass the returned `cursor` back to get the next page; no cursor means the listing is done.
   * The cursor is the last key of the page and the next page starts after it (whether or not
   * that key still exists), so a cursor can be stored, resumed from, and handed to another
   * store; the multiplexed store relies on this.
   */
  list(prefix: string, opts?: ListOptions): Promise<ListPage>;
}

/**
 * An object's bytes, read on demand: `size` bytes, of which {@link read} copies any range. A store
 * may read it more than once (a retried request, each component of a multiplex) and in any
 * order; every read of a range gives the same bytes.
 */
export interface ByteSource {
  readonly size: number;
  /** Copies the `target.length` bytes that start at `offset` into `target`; throws when the range runs past `size`. */
  read(offset: number, target: Uint8Array): void;
}

export interface ListOptions {
  cursor?: string;
  limit?: number;
}

export interface ListPage {
  keys: string[];
  cursor?: string;
}

/** A component of a multiplexed store that missed a write or held a bad copy. */
export interface HealEntry {
  key: string;
  component: string;
  reason: 'missed-write' | 'missing' | 'corrupt';
  detail?: string;
}

/** Where the multiplexed store records components that need healing (Postgres `heal_queue`). */
export interface HealQueue {
  record(entry: HealEntry): Promise<void>;
}
