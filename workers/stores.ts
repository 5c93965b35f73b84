/** Opens what activities work on: the PostgreSQL pool (migrated) and the configured blobstore. */
import type { Config } from '../config/options.ts';
import type { Endpoints } from '../config/resolve.ts';
import { connectPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { PgHealQueue } from '../storage/db/heal-queue.ts';
import { openBlobStore, type BlobStoreConfig } from '../storage/blobstore/index.ts';
import type { Stores } from '../activities/context.ts';

export type { Stores } from '../activities/context.ts';

/** The blobstore configuration the options describe, with the stack's S3 filled in. */
export function blobStoreConfig(config: Config, endpoints: Endpoints): BlobStoreConfig {
  const s3 = (bucket: string): BlobStoreConfig => {
    const { endpoint, region, accessKeyId, secretAccessKey, forcePathStyle } = endpoints.s3;
    if (!accessKeyId || !secretAccessKey) {
      throw new Error(`blobstore ${config.blobstore.kind} needs S3 credentials: set REPOWALK_S3_ACCESS_KEY_ID and REPOWALK_S3_SECRET_ACCESS_KEY, or run the local stack`);
    }
    return { kind: 's3', bucket, endpoint, region, forcePathStyle, accessKeyId, secretAccessKey };
  };
  switch (config.blobstore.kind) {
    case 'local':
      return { kind: 'local', dir: config.blobstore.dir };
    case 's3':
      return s3(config.s3.buckets[0]!);
    case 'multiplex': {
      const components = config.s3.buckets.map(s3);
      if (config.blobstore.multiplexLocal) components.push({ kind: 'local', dir: config.blobstore.dir });
      if (config.blobstore.writeQuorum > components.length) {
        throw new Error(`REPOWALK_WRITE_QUORUM=${config.blobstore.writeQuorum} is more than the ${components.length} multiplexed components`);
      }
      return { kind: 'multiplex', writeQuorum: config.blobstore.writeQuorum, components };
    }
  }
}

export async function openStores(config: Config, endpoints: Endpoints, opts: { migrate?: boolean } = {}): Promise<Stores> {
  const pool = await connectPool(endpoints.databaseUrl, { max: config.database.poolMax });
  try {
    if (opts.migrate !== false) await migrate(pool);
    const healQueue = new PgHealQueue(pool);
    const blobs = await openBlobStore(blobStoreConfig(config, endpoints), { healQueue });
    return { pool, blobs, healQueue, close: () => pool.end() };
  } catch (err) {
    await pool.end();
    throw err;
  }
}
