/**
 * Per-PDS politeness holds across worker processes: two `repowalk worker` processes backfill
 * from one PDS host (the fault-injecting server in front of a static PDS, which counts the
 * requests it is answering at once), each with REPOWALK_PDS_CONCURRENCY=2 and work enough for
 * four. Shared through PostgreSQL, the host never sees more than 2 getRepo at once; and a 429
 * one worker receives holds the other one back for the whole cool-down.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Server } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { Client, Connection } from '@temporalio/client';
import { serveRepos, smallRepos } from '../atproto/testing/static-pds.ts';
import { startWorkerFleet, type WorkerFleet } from '../stack/worker-fleet.ts';
import type { BackfillInput, BackfillProgress } from '../workflows/backfill.ts';
import { startFaultServer, type FaultServer } from './fault-server.ts';
import { freshDatabase, testStack } from './stack.ts';

const REPOS = 40;
const CONCURRENCY = 2;
const GET_REPO = 'com.atproto.sync.getRepo';
const prefix = `polite-${process.pid}-${Date.now().toString(36)}`;

let server: Server;
let faults: FaultServer;
let fleet: WorkerFleet;
let pool: pg.Pool;
let client: Client;
const dirs: string[] = [];

beforeAll(async () => {
  // The first 40 of the kill test's repos: made once, cached.
  const repos = (await smallRepos(120, 10, (l) => console.log(`[politeness e2e] ${l}`))).slice(0, REPOS);
  // The DID documents name the fault server as the PDS: every getRepo passes through it.
  const served = await serveRepos(repos, { pdsEndpoint: () => faults.url });
  server = served.server;
  faults = await startFaultServer({ upstream: served.url });
  const [databaseUrl, blobDir, stateDir] = await Promise.all([
    freshDatabase('politeness_e2e'),
    mkdtemp(join(tmpdir(), 'repowalk-polite-blobs-')),
    mkdtemp(join(tmpdir(), 'repowalk-polite-state-')),
  ]);
  dirs.push(blobDir, stateDir);
  const stack = testStack();
  fleet = await startWorkerFleet({
    count: 2,
    jobs: ['backfill'],
    env: {
      REPOWALK_STATE_DIR: stateDir,
      REPOWALK_LOG_LEVEL: 'warn',
      TEMPORAL_ADDRESS: stack.temporal.address,
      TEMPORAL_NAMESPACE: stack.temporal.namespace,
      DATABASE_URL: databaseUrl,
      REPOWALK_BLOB_DIR: blobDir,
      REPOWALK_TASK_QUEUE: prefix,
      REPOWALK_PLC_URL: `${served.url}/plc`,
      REPOWALK_ALLOW_PRIVATE_ADDRESSES: 'true',
      REPOWALK_PDS_CONCURRENCY: String(CONCURRENCY),
      REPOWALK_PDS_POLITENESS: 'shared',
    },
  });
  pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  client = new Client({ connection: await Connection.connect({ address: stack.temporal.address }), namespace: stack.temporal.namespace });
}, 400_000);

afterAll(async () => {
  await fleet?.stop();
  await client?.connection.close();
  await pool?.end();
  await faults?.stop();
  server?.close();
  if (process.env.REPOWALK_KEEP_TEST_STATE !== '1') for (const d of dirs) await rm(d, { recursive: true, force: true });
}, 120_000);

/** Two pages at once, four repos at once in each: room for 8 requests if nothing held them back. */
function backfill(id: string): Promise<BackfillProgress> {
  const input: BackfillInput = { source: { kind: 'pds', url: faults.url }, pageSize: 10, concurrency: 4, pagesInFlight: 2 };
  return client.workflow.execute('backfill', { taskQueue: `${prefix}-backfill`, workflowId: `${prefix}/${id}`, args: [input] }) as Promise<BackfillProgress>;
}

describe('politeness shared by two worker processes', () => {
  it('one PDS host never answers more than REPOWALK_PDS_CONCURRENCY getRepo at once, from both workers together', async () => {
    faults.setRule({ path: GET_REPO, action: { type: 'delay', ms: 300 } });
    const holders = new Set<string>();
    const watch = setInterval(() => {
      void pool.query<{ holder: string }>('SELECT DISTINCT holder FROM pds_leases').then((r) => r.rows.forEach((x) => holders.add(x.holder)), () => {});
    }, 100);
    let result: BackfillProgress;
    try {
      result = await backfill('first');
    } finally {
      clearInterval(watch);
    }
    expect(result.totals).toMatchObject({ repos: REPOS, imported: REPOS, failed: 0 });
    expect(faults.log.filter((e) => e.path === `/xrpc/${GET_REPO}`)).toHaveLength(REPOS);
    // Both workers fetched (each held slots), yet the host saw at most CONCURRENCY at once.
    expect(holders.size).toBe(2);
    expect(faults.peakConcurrency(GET_REPO)).toBe(CONCURRENCY);
  }, 300_000);

  it('a 429 one worker receives cools the host down for the other worker too', async () => {
    faults.clearRules();
    faults.resetPeaks();
    // The first getRepo is refused with Retry-After: 3; every other one is slow, so both workers are busy.
    const limited = faults.setRule({ path: GET_REPO, times: 1, delayMs: 600, action: { type: 'rateLimit', retryAfter: 3, resetIn: null } });
    faults.setRule({ path: GET_REPO, action: { type: 'delay', ms: 300 } });
    const from = faults.log.length;
    const result = await backfill('second');
    expect(faults.hits(limited)).toBe(1);
    const seen = faults.log.slice(from).filter((e) => e.path === `/xrpc/${GET_REPO}`);
    const refusedAt = seen.find((e) => e.action === 'rateLimit')!.at + 600; // it answered after its delay
    // Requests already in flight finish; none starts, from either worker, during the cool-down
    // once it has reached both: a worker passes a lease from request to request for up to a
    // second (SHARED_REUSE_MS) before it asks the store, which holds the cool-down, again.
    const startedDuring = seen.filter((e) => e.action !== 'rateLimit' && e.at > refusedAt + 1250 && e.at < refusedAt + 2750);
    expect(startedDuring).toEqual([]);
    expect(seen.some((e) => e.at >= refusedAt + 2750)).toBe(true);
    expect(faults.peakConcurrency(GET_REPO)).toBeLessThanOrEqual(CONCURRENCY);
    // The refused repo went to its own resync; the others came back unchanged.
    expect(result.totals).toMatchObject({ repos: REPOS, failed: 1, skipped: REPOS - 1 });
  }, 300_000);
});
