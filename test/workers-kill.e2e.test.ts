/**
 * Several worker processes share every job, and losing one (kill -9) loses nothing:
 *
 * - a bulk backfill with three `repowalk worker` processes, one killed with SIGKILL while it
 *   holds a PDS slot (so mid-request), completes; every repo, record, event and block is stored
 *   once, refcounts are right, and the mirror equals the one a single worker made of the same
 *   repos in a database of its own;
 * - a sliced validate walk over that mirror with three workers, one killed mid-walk, completes
 *   with totals equal to the single worker's walk.
 *
 * The repos are served by a static PDS (atproto/testing/static-pds.ts; real signed repos) whose
 * getRepo answers slowly, so that requests overlap and the kill lands while work is in flight.
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
import type { WalkProgress } from '../workflows/walk.ts';
import type { WalkInputJson } from '../graph/walk-input.ts';
import { freshDatabase, testStack } from './stack.ts';
import { refcountProblems, sleep, waitFor } from './helpers.ts';

const REPOS = 120;
const RECORDS = 10;
const run = `kill-${process.pid}-${Date.now().toString(36)}`;

interface Mirror {
  name: string;
  prefix: string;
  pool: pg.Pool;
  fleet: WorkerFleet;
  dirs: string[];
}

let server: Server;
let pdsUrl: string;
let client: Client;
let many: Mirror;
let one: Mirror;

async function mirror(name: string, workers: number): Promise<Mirror> {
  const [databaseUrl, blobDir, stateDir] = await Promise.all([
    freshDatabase(`kill_${name}`),
    mkdtemp(join(tmpdir(), `repowalk-kill-${name}-blobs-`)),
    mkdtemp(join(tmpdir(), `repowalk-kill-${name}-state-`)),
  ]);
  const prefix = `${run}-${name}`;
  const stack = testStack();
  const fleet = await startWorkerFleet({
    count: workers,
    jobs: ['backfill', 'walk'],
    env: {
      REPOWALK_STATE_DIR: stateDir,
      REPOWALK_LOG_LEVEL: 'warn',
      TEMPORAL_ADDRESS: stack.temporal.address,
      TEMPORAL_NAMESPACE: stack.temporal.namespace,
      DATABASE_URL: databaseUrl,
      REPOWALK_BLOB_DIR: blobDir,
      REPOWALK_TASK_QUEUE: prefix,
      REPOWALK_PLC_URL: `${pdsUrl}/plc`,
      REPOWALK_ALLOW_PRIVATE_ADDRESSES: 'true',
      REPOWALK_PDS_CONCURRENCY: '6',
    },
  });
  return { name, prefix, pool: new pg.Pool({ connectionString: databaseUrl, max: 3 }), fleet, dirs: [blobDir, stateDir] };
}

beforeAll(async () => {
  const repos = await smallRepos(REPOS, RECORDS, (l) => console.log(`[workers kill e2e] ${l}`));
  const served = await serveRepos(repos, { getRepoDelayMs: 250 });
  server = served.server;
  pdsUrl = served.url;
  client = new Client({ connection: await Connection.connect({ address: testStack().temporal.address }), namespace: testStack().temporal.namespace });
  const t0 = performance.now();
  [many, one] = await Promise.all([mirror('many', 3), mirror('one', 1)]);
  console.log(`[workers kill e2e] 4 worker processes ready in ${Math.round(performance.now() - t0)} ms`);
}, 600_000);

afterAll(async () => {
  for (const m of [many, one]) {
    if (!m) continue;
    await m.fleet.stop();
    await m.pool.end();
    if (process.env.REPOWALK_KEEP_TEST_STATE !== '1') for (const d of m.dirs) await rm(d, { recursive: true, force: true });
  }
  await client?.connection.close();
  server?.close();
}, 120_000);

async function count(m: Mirror, sql: string): Promise<number> {
  return Number((await m.pool.query<{ n: string }>(sql)).rows[0]!.n);
}

/** What the mirror holds, in a form two mirrors of the same repos must agree on. */
async function books(m: Mirror) {
  const repos = (await m.pool.query<{ did: string; rev: string; head: string; status: string }>(
    `SELECT did, rev, encode(head_cid, 'hex') AS head, status FROM repos ORDER BY did`,
  )).rows;
  return {
    repos,
    records: await count(m, 'SELECT count(*) AS n FROM records'),
    events: await count(m, 'SELECT count(*) AS n FROM events'),
    blocks: await count(m, 'SELECT count(*) AS n FROM blocks'),
    refcounts: await count(m, 'SELECT coalesce(sum(refcount), 0) AS n FROM blocks'),
  };
}

/** Worker pids holding a PDS slot right now (the shared politeness leases name their holder). */
async function pidsHoldingSlots(m: Mirror): Promise<number[]> {
  const { rows } = await m.pool.query<{ holder: string }>('SELECT DISTINCT holder FROM pds_leases WHERE expires_at > now()');
  return rows.map((r) => Number(r.holder.split(':').at(-2)));
}

describe('three workers, one killed with SIGKILL', () => {
  it('a bulk backfill completes with every event once, refcounts right, and the mirror equal to a one-worker run', async () => {
    const input: BackfillInput = { source: { kind: 'pds', url: pdsUrl }, pageSize: 6, concurrency: 3, pagesInFlight: 3, heartbeatSeconds: 10 };
    const start = (m: Mirror) => client.workflow.start('backfill', { taskQueue: `${m.prefix}-backfill`, workflowId: `${m.prefix}/backfill`, args: [input] });
    const [manyHandle, oneHandle] = await Promise.all([start(many), start(one)]);

    // Which workers took part: every worker that held a PDS slot at some point.
    const sharing = new Set<number>();
    const victimPid = await waitFor('a worker holding a PDS slot after a fifth of the repos are stored', async () => {
      const holders = await pidsHoldingSlots(many);
      for (const p of holders) sharing.add(p);
      if ((await count(many, 'SELECT count(*) AS n FROM repos')) < REPOS / 5) return undefined;
      return holders.find((p) => many.fleet.workers.some((w) => w.child.pid === p));
    }, 120_000);
    const victim = many.fleet.workers.find((w) => w.child.pid === victimPid)!;
    const storedAtKill = await count(many, 'SELECT count(*) AS n FROM repos');
    await many.fleet.kill(victim.index);
    expect((await victim.exited).signal).toBe('SIGKILL');
    expect(storedAtKill).toBeLessThan(REPOS);

    const watch = setInterval(() => void pidsHoldingSlots(many).then((ps) => ps.forEach((p) => sharing.add(p)), () => {}), 200);
    let manyResult: BackfillProgress;
    let oneResult: BackfillProgress;
    try {
      [manyResult, oneResult] = (await Promise.all([manyHandle.result(), oneHandle.result()])) as [BackfillProgress, BackfillProgress];
    } finally {
      clearInterval(watch);
    }
    console.log(`[workers kill e2e] backfill: killed worker ${victim.index} (pid ${victimPid}) at ${storedAtKill}/${REPOS} repos; workers that held slots: ${sharing.size}`);
    expect(sharing.size).toBeGreaterThanOrEqual(2);

    expect(oneResult.totals).toMatchObject({ repos: REPOS, imported: REPOS, failed: 0, records: REPOS * RECORDS });
    // The killed worker's page is imported again by another worker: repos it had already
    // committed come back unchanged, so they count as skipped, not imported twice.
    expect(manyResult.totals).toMatchObject({ repos: REPOS, failed: 0 });
    expect(manyResult.totals.imported + manyResult.totals.skipped).toBe(REPOS);
    expect(manyResult.handedOver).toBe(0);

    const [manyBooks, oneBooks] = await Promise.all([books(many), books(one)]);
    expect(manyBooks.repos).toHaveLength(REPOS);
    expect(manyBooks).toEqual(oneBooks);
    expect(manyBooks.records).toBe(REPOS * RECORDS);
    // One create event per record: none doubled by the retried page, none lost with the killed worker.
    expect(manyBooks.events).toBe(REPOS * RECORDS);
    expect(await count(many, `SELECT count(*) AS n FROM (SELECT 1 FROM events GROUP BY did, collection, rkey, kind HAVING count(*) > 1) d`)).toBe(0);
    expect(await refcountProblems(many.pool)).toEqual([]);
    expect(await refcountProblems(one.pool)).toEqual([]);
  }, 420_000);

  it('a sliced walk completes with totals equal to a one-worker walk', async () => {
    // Three again: the one killed above is replaced.
    await many.fleet.add();
    const input: WalkInputJson = { type: 'validate', slices: 6, sliceParallelism: 6, pageSize: 1, heartbeatSeconds: 5 };
    const start = (m: Mirror) => client.workflow.start('walk', { taskQueue: `${m.prefix}-walk`, workflowId: `${m.prefix}/walk`, args: [input] });
    const [manyHandle, oneHandle] = await Promise.all([start(many), start(one)]);

    await waitFor('the walk to have slices running', async () => ((await manyHandle.query<WalkProgress>('progress')).slices.running.length > 0 ? true : undefined), 60_000);
    await sleep(300);
    const before = await manyHandle.query<WalkProgress>('progress');
    const live = many.fleet.workers.filter((w) => w.child.exitCode === null && w.child.signalCode === null);
    expect(live).toHaveLength(3);
    await many.fleet.kill(live[1]!.index);
    expect(before.state).toBe('running');

    const [manyResult, oneResult] = (await Promise.all([manyHandle.result(), oneHandle.result()])) as [WalkProgress, WalkProgress];
    console.log(`[workers kill e2e] walk: killed a worker with ${before.slices.done}/6 slices done; totals ${JSON.stringify(manyResult.totals)}`);
    expect(manyResult.state).toBe('done');
    expect(manyResult.slices).toEqual({ total: 6, done: 6, running: [] });
    expect(manyResult.repos).toBe(REPOS);
    expect(manyResult.totals).toEqual(oneResult.totals);
    expect(manyResult.totals.findings ?? {}).toEqual({});
  }, 300_000);
});
