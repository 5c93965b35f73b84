/**
 * What every job's activities are made from: the validated configuration and the stores the
 * worker opened (`workers/stores.ts` opens them; tests hand in their own).
 */
import type pg from 'pg';
import type { Config } from '../config/options.ts';
import type { PgHealQueue } from '../storage/db/heal-queue.ts';
import type { BlobStore } from '../storage/blobstore/types.ts';

export interface Stores {
  pool: pg.Pool;
  blobs: BlobStore;
  healQueue: PgHealQueue;
  close(): Promise<void>;
}

export interface JobContext {
  config: Config;
  stores: Stores;
}
