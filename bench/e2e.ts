/**
 * End-to-end backfill throughput: N small signed repos through Temporal (bulk `backfill`
 * workflow, `backfillMany` activities, a real worker, PostgreSQL, a directory blobstore).
 *
 * The repos are served by a static loopback server that answers `listRepos`, `getRepo` and the
 * PLC's `/<did>` from pre-generated CARs: the reference PDS would spend minutes creating 2,000
 * accounts, and this measures repowalk, not the PDS. Run by bench/run.ts, which passes the stack.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { Client, Connection } from '@temporalio/client';
import { serveRepos, smallRepos } from '../atproto/testing/static-pds.ts';
import { loadConfig } from '../config/load.ts';
import { runWorker } from '../workers/worker.ts';
import { JOBS } from '../workers/jobs.ts';
import { taskQueueFor } from '../config/task-queues.ts';
import { startWorkerFleet, type WorkerFleet } from '../stack/worker-fleet.ts';
import { backfill, type BackfillProgress } from '../workflows/backfill.ts';

export interface E2eBench {
  workers: number;
  repos: number;
  recordsPerRepo: number;
  seconds: number;
  reposPerSecond: number;
  imported: number;
  failed: number;
  totals: BackfillProgress['totals'];
}

export async function benchE2e(opts: { repos: number; records: number; temporalAddress: string; databaseUrl: string; workers?: number; log?: (l: string) => void }): Promise<E2eBench> {
  const workers = opts.workers ?? 1;
  const log = opts.log ?? ((l: string) => console.error(l));
  const repos = await smallRepos(opts.repos, opts.records, log);
  const { url, server } = await serveRepos(repos);
  const dbName = `bench_e2e_${Date.now().toString(36)}`;
  const admin = new pg.Client({ connectionString: opts.databaseUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${dbName}`);
  await admin.end();
  const dbUrl = new URL(opts.databaseUrl);
  dbUrl.pathname = `/${dbName}`;
  const prefix = `bench-${Date.now().toString(36)}`;
  const env = {
    TEMPORAL_ADDRESS: opts.temporalAddress,
    DATABASE_URL: dbUrl.toString(),
    REPOWALK_TASK_QUEUE: prefix,
    REPOWALK_BLOB_DIR: mkdtempSync(join(tmpdir(), 'repowalk-bench-e2e-')),
    REPOWALK_PLC_URL: `${url}/plc`,
    REPOWALK_ALLOW_PRIVATE_ADDRESSES: 'true',
    // The static PDS's handles (*.bench.test) resolve nowhere: checking each costs a failed DNS
    // and HTTPS round (and, with many lanes at once, getaddrinfo's 5 s retry here), not repowalk.
    REPOWALK_VERIFY_HANDLES: 'false',
    REPOWALK_PDS_CONCURRENCY: '16',
    REPOWALK_LOG_LEVEL: 'warn',
  };
  const config = loadConfig({ env });
  const stop = new AbortController();
  let worker: Promise<void> = Promise.resolve();
  let fleet: WorkerFleet | undefined;
  if (workers === 1) {
    let ready!: () => void;
    const isReady = new Promise<void>((r) => (ready = r));
    worker = runWorker({
      config,
      endpoints: { temporalAddress: opts.temporalAddress, namespace: 'default', databaseUrl: dbUrl.toString(), s3: { endpoint: undefined, region: 'us-east-1', accessKeyId: undefined, secretAccessKey: undefined, buckets: [], forcePathStyle: true }, stack: undefined },
      jobs: JOBS.filter((j) => j.name === 'backfill'),
      signal: stop.signal,
      onReady: () => ready(),
    });
    await Promise.race([isReady, worker]);
  } else {
    // Several processes share the job: what a cluster's worker fleet does.
    log(`e2e: starting ${workers} worker processes`);
    fleet = await startWorkerFleet({ count: workers, jobs: ['backfill'], env: { ...env, REPOWALK_STATE_DIR: mkdtempSync(join(tmpdir(), 'repowalk-bench-e2e-state-')) } });
  }
  const client = new Client({ connection: await Connection.connect({ address: opts.temporalAddress }) });
  try {
    log(`e2e: backfilling ${repos.length} repos through Temporal`);
    const t = performance.now();
    const progress = await client.workflow.execute(backfill, {
      taskQueue: taskQueueFor(config, 'backfill'),
      workflowId: `${prefix}/backfill`,
      args: [{ source: { kind: 'pds', url }, pageSize: 200, concurrency: 16, pagesInFlight: workers }],
    });
    const seconds = (performance.now() - t) / 1000;
    return {
      workers,
      repos: repos.length,
      recordsPerRepo: opts.records,
      seconds,
      reposPerSecond: repos.length / seconds,
      imported: progress.totals.imported,
      totals: progress.totals,
      failed: progress.totals.failed,
    };
  } finally {
    await client.connection.close();
    stop.abort();
    await worker.catch(() => {});
    await fleet?.stop();
    server.close();
  }
}
