/**
 * A walk worker process for workflows/walk.test.ts, which kills it with SIGKILL mid-page and
 * starts another: the walk workflows and activities on one task queue, over a PostgreSQL
 * database and a local blob directory, the way the `walk` job runs them. Not used in
 * production (`repowalk worker --job walk` is).
 *
 * Environment: TEMPORAL_ADDRESS, DATABASE_URL, REPOWALK_BLOB_DIR, WALK_TASK_QUEUE,
 * WALK_BUNDLE (a workflow bundle written by the test), WALK_ROOT_DELAY_MS (a pause after each
 * repo, so that a page lasts long enough to be interrupted).
 */
import { NativeConnection, Worker, Runtime, DefaultLogger } from '@temporalio/worker';
import { connectPool } from '../storage/db/pool.ts';
import { PgHealQueue } from '../storage/db/heal-queue.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { walkActivities } from '../activities/walk.ts';

const env = (name: string): string => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

Runtime.install({ logger: new DefaultLogger('WARN') });
const pool = await connectPool(env('DATABASE_URL'));
const stores = { pool, blobs: new LocalBlobStore(env('REPOWALK_BLOB_DIR')), healQueue: new PgHealQueue(pool), close: () => pool.end() };
const delay = Number(process.env.WALK_ROOT_DELAY_MS ?? 0);
const connection = await NativeConnection.connect({ address: env('TEMPORAL_ADDRESS') });
const worker = await Worker.create({
  connection,
  taskQueue: env('WALK_TASK_QUEUE'),
  workflowBundle: { codePath: env('WALK_BUNDLE') },
  activities: walkActivities({ stores }, delay > 0 ? { afterRoot: () => new Promise((r) => setTimeout(r, delay)) } : {}),
  shutdownGraceTime: '2 seconds',
});
process.on('SIGTERM', () => worker.shutdown());
console.log('walk test worker ready');
await worker.run();
await connection.close();
await pool.end();
