/**
 * The blobstore: the contract, its three implementations, and a factory from plain configuration.
 * The S3 store (and the AWS SDK under it, ~15 MB resident once loaded) is imported only when a
 * configuration names one: import `S3BlobStore` from `./s3.ts` itself.
 */
import type { BlobStore, HealQueue } from './types.ts';
import { LocalBlobStore } from './local.ts';
import type { RetryOptions } from './s3.ts';
import { MultiplexBlobStore } from './multiplex.ts';

export type { BlobStore, ByteSource, HealEntry, HealQueue, ListOptions, ListPage } from './types.ts';
export { LocalBlobStore } from './local.ts';
export type { RetryOptions, S3BlobStoreOptions, S3Config } from './s3.ts';
export { MultiplexBlobStore } from './multiplex.ts';
export type { ComponentPresence, MultiplexOptions } from './multiplex.ts';

/** What configuration says a blobstore is; a multiplex nests the configurations of its components. */
export type BlobStoreConfig =
  | { kind: 'local'; dir: string }
  | {
      kind: 's3';
      bucket: string;
      endpoint?: string;
      region: string;
      forcePathStyle?: boolean;
      accessKeyId: string;
      secretAccessKey: string;
      /** Key prefix inside the bucket. */
      prefix?: string;
      /** Store name when `s3:<bucket>` is ambiguous (same bucket name in two regions). */
      name?: string;
    }
  | { kind: 'multiplex'; writeQuorum: number; components: BlobStoreConfig[] };

export interface OpenOptions {
  /** Where a multiplexed store records missed writes and bad copies. */
  healQueue?: HealQueue;
  /** Retry policy of every S3 store opened. */
  s3Retries?: RetryOptions;
}

/**
 * Opens the blobstore a configuration describes. Nothing is contacted until the first call.
 * Rejects with RangeError or StorageError when a multiplex's quorum or component names are invalid.
 */
export async function openBlobStore(config: BlobStoreConfig, opts: OpenOptions = {}): Promise<BlobStore> {
  switch (config.kind) {
    case 'local':
      return new LocalBlobStore(config.dir);
    case 's3': {
      const { S3BlobStore } = await import('./s3.ts');
      const { bucket, prefix, name, ...s3 } = config;
      return new S3BlobStore({
        bucket,
        config: s3,
        ...(prefix !== undefined ? { prefix } : {}),
        ...(name !== undefined ? { name } : {}),
        ...(opts.s3Retries ? { retries: opts.s3Retries } : {}),
      });
    }
    case 'multiplex':
      return new MultiplexBlobStore({
        writeQuorum: config.writeQuorum,
        components: await Promise.all(config.components.map((c) => openBlobStore(c, opts))),
        ...(opts.healQueue ? { healQueue: opts.healQueue } : {}),
      });
    default: {
      const never: never = config;
      throw new RangeError(`unknown blobstore kind ${(never as { kind: unknown }).kind}`);
    }
  }
}
