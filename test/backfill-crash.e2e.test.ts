/**
 * Backfill end to end with a real `repowalk worker --job backfill` CHILD PROCESS, against the
 * reference PDS and PLC and the real stack:
 *
 * - the worker is killed with SIGKILL in the middle of importing the 5,000-record account (its
 *   pack already uploaded, its PostgreSQL transaction open), restarted, and the backfill
 *   completes with every event once and refcounts right;
 * - the command line (`repowalk backfill add | status`) as an operator runs it.
 *
 * The in-process cases (bulk, re-backfill, gone and deleted accounts, faults) are in
 * backfill.e2e.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { Client, Connection } from '@temporalio/client';
import { toBase32 } from '@atcute/multibase';
import { backfillRepo, type BackfillRepoInput, type BackfillRepoState } from '../workflows/backfill-repo.ts';
import { freshDatabase, testStack } from './stack.ts';
import { listAllRecords, seedSampleAccounts, startPds, type PdsServer, type SampleAccounts } from './pds.ts';
import { refcountProblems, spawnReadyWorker, waitFor } from './helpers.ts';

const ROOT = join(import.meta.dirname, '..');
const prefix = `bf-crash-${process.pid}`;
const taskQueue = `${prefix}-backfill`;

let pds: PdsServer;
let sample: SampleAccounts;
let dataDir: string;
let blobDir: string;
let stateDir: string;
let databaseUrl: string;
let pool: pg.Pool;
let client: Client;

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const stack = testStack();
  return {
    ...process.env,
    REPOWALK_STATE_DIR: stateDir,
    REPOWALK_LOG_LEVEL: 'warn',
    TEMPORAL_ADDRESS: stack.temporal.address,
    TEMPORAL_NAMESPACE: stack.temporal.namespace,
    DATABASE_URL: databaseUrl,
    REPOWALK_BLOB_DIR: blobDir,
    REPOWALK_TASK_QUEUE: prefix,
    REPOWALK_PLC_URL: pds.plcUrl,
    REPOWALK_ALLOW_PRIVATE_ADDRESSES: 'true',
    ...extra,
  };
}

interface RunningWorker {
  child: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: string | null }>;
}

let worker: RunningWorker | undefined;

/** `./repowalk worker --job backfill`, resolved once it says it polls. */
async function startWorkerProcess(): Promise<RunningWorker> {
  return spawnReadyWorker(join(ROOT, 'repowalk'), ['worker', '--job', 'backfill'], env(), { ready: 'worker running jobs backfill', timeoutMs: 120_000 });
}

/** Runs `./repowalk …` to its end. */
function cli(args: string[], extra: Record<string, string> = {}, timeoutMs = 120_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(join(ROOT, 'repowalk'), args, { env: env(extra), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`repowalk ${args.join(' ')} did not finish in ${timeoutMs} ms:\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

beforeAll(async () => {
  const t0 = performance.now();
  dataDir = await mkdtemp(join(tmpdir(), 'repowalk-bfc-pds-'));
  blobDir = await mkdtemp(join(tmpdir(), 'repowalk-bfc-blobs-'));
  stateDir = await mkdtemp(join(tmpdir(), 'repowalk-bfc-state-'));
  const [p, db] = await Promise.all([startPds({ dataDir }), freshDatabase('backfill_crash')]);
  pds = p;
  databaseUrl = db;
  // Seeding overlaps the worker's start (workflow bundling).
  const [seeded, w] = await Promise.all([seedSampleAccounts(pds, { bigAccountRecords: 5000 }), startWorkerProcess()]);
  sample = seeded;
  worker = w;
  pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
  client = new Client({ connection: await Connection.connect({ address: testStack().temporal.address }), namespace: testStack().temporal.namespace });
  console.log(`[backfill crash e2e] PDS seeded and worker ready in ${Math.round(performance.now() - t0)} ms`);
}, 300_000);

afterAll(async () => {
  if (worker && worker.child.exitCode === null && worker.child.signalCode === null) {
    worker.child.kill('SIGTERM');
    const killer = setTimeout(() => worker!.child.kill('SIGKILL'), 20_000);
    await worker.exited;
    clearTimeout(killer);
  }
  await client?.connection.close();
  await pool?.end();
  await pds?.stop();
  if (process.env.REPOWALK_KEEP_TEST_STATE !== '1') {
    for (const d of [dataDir, blobDir, stateDir]) if (d) await rm(d, { recursive: true, force: true });
  }
}, 120_000);

const cidString = (bytes: Buffer | Uint8Array): string => `b${toBase32(bytes)}`;




async function count(sql: string, params: unknown[] = []): Promise<number> {
  const { rows } = await pool.query<{ n: string }>(sql, params);
  return Number(rows[0]!.n);
}

describe('a backfill worker killed mid-import', () => {
  it('SIGKILL while the 5,000-record import holds its transaction open; after a restart the import completes once, refcounts right', async () => {
    const big = sample.big!;
    const expected = sample.recordCounts[big.did]!;
    expect(expected).toBe(5001);

    // Hold a lock the import needs near the end of its transaction (collection_counts is
    // rewritten after blocks, refcounts and records): the worker blocks there, its pack
    // uploaded and its rows written but not committed, and is killed in that state.
    const blocker = await pool.connect();
    let blocking = true;
    try {
      await blocker.query('BEGIN');
      await blocker.query('LOCK TABLE collection_counts IN ACCESS EXCLUSIVE MODE');

      const input: BackfillRepoInput = { did: big.did, settings: { backoff: { initialSeconds: 1, maxSeconds: 4, jitter: 0.1 } } };
      const handle = await client.workflow.start(backfillRepo, { taskQueue, workflowId: `backfill/${big.did}`, args: [input], workflowExecutionTimeout: '10 minutes' });

      // The activity is running (pending in the workflow) and its transaction waits on our lock.
      await waitFor('the backfillRepoOnce activity to start', async () => {
        const desc = await handle.describe();
        return (desc.raw.pendingActivities ?? []).some((a) => a.activityType?.name === 'backfillRepoOnce');
      });
      await waitFor(
        'the import transaction to wait on collection_counts',
        async () =>
          (await count(
            `SELECT count(*) AS n FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' AND query ILIKE '%collection_counts%'`,
          )) > 0,
        120_000,
      );
      // Mid-import: the pack is in the blobstore (or on its way), nothing is committed.
      expect(await count('SELECT count(*) AS n FROM records WHERE did = $1', [big.did])).toBe(0);
      expect(await count('SELECT count(*) AS n FROM blocks')).toBe(0);

      const dying = worker!;
      dying.child.kill('SIGKILL');
      expect(await dying.exited).toMatchObject({ signal: 'SIGKILL' });
      worker = undefined;

      // With no worker at all, `backfill status` still answers from the database, promptly.
      const t0 = performance.now();
      const status = await cli(['backfill', 'status', big.did], {}, 60_000);
      expect(performance.now() - t0).toBeLessThan(20_000);
      expect(status.code).toBe(1);
      expect(status.stdout).toContain(`${big.did} is not in the mirror`);
      expect(status.stdout).toContain(`workflow backfill/${big.did}: importing, retry 0 (running; no worker answered the state query)`);

      // The orphaned transaction dies with its connection once it gets the lock.
      await blocker.query('ROLLBACK');
      blocking = false;
      await waitFor('the killed worker\'s backend to go away', async () => (await count(`SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE '%collection_counts%' AND state <> 'idle'`)) === 0);
      expect(await count('SELECT count(*) AS n FROM records WHERE did = $1', [big.did])).toBe(0);
      expect(await count('SELECT count(*) AS n FROM events WHERE did = $1', [big.did])).toBe(0);
      expect(await count('SELECT count(*) AS n FROM blocks')).toBe(0);

      // Restart. Temporal hands the activity to the new worker once the dead one's heartbeat times out.
      worker = await startWorkerProcess();
      const state = await handle.result();
      expect(state).toMatchObject({ state: 'done', lastOutcome: { kind: 'imported', created: expected, updated: 0, deleted: 0 } });

      // The activity really ran twice: the killed attempt and the one that finished.
      let attempts = 0;
      for (const e of (await handle.fetchHistory()).events ?? []) if (e.activityTaskStartedEventAttributes) attempts = Math.max(attempts, e.activityTaskStartedEventAttributes.attempt ?? 0);
      expect(attempts).toBeGreaterThanOrEqual(2);
    } finally {
      if (blocking) await blocker.query('ROLLBACK').catch(() => {});
      blocker.release();
    }

    // Every record once, every event once, what the PDS lists, and refcounts right.
    const { rows: stored } = await pool.query<{ collection: string; rkey: string; cid: Buffer }>('SELECT collection, rkey, cid FROM records WHERE did = $1', [big.did]);
    const fromPds = await listAllRecords(pds, big.did);
    const key = (r: { collection: string; rkey: string; cid: string }) => `${r.collection}/${r.rkey} ${r.cid}`;
    expect(stored.map((r) => key({ ...r, cid: cidString(r.cid) })).sort()).toEqual(fromPds.map(key).sort());
    expect(await count('SELECT count(*) AS n FROM events WHERE did = $1', [big.did])).toBe(expected);
    expect(await count(`SELECT count(*) AS n FROM events WHERE did = $1 AND kind = 'create' AND origin = 'backfill'`, [big.did])).toBe(expected);
    expect(await count('SELECT count(DISTINCT (collection, rkey)) AS n FROM events WHERE did = $1', [big.did])).toBe(expected);
    expect(await count('SELECT count(*) AS n FROM packs')).toBe(1);
    expect(await count(`SELECT coalesce(sum(count), 0) AS n FROM collection_counts WHERE did = $1`, [big.did])).toBe(expected);
    expect(await refcountProblems(pool)).toEqual([]);
    // The killed attempt's pack, if its upload finished, has the same content-derived key as the
    // committed one: nothing else is left in the blobstore.
    expect((await listFiles(join(blobDir, 'packs'))).length).toBe(1);
  }, 300_000);
});

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) if (entry.isFile() && !entry.name.startsWith('.')) out.push(join(entry.parentPath, entry.name));
  return out;
}

describe('repowalk backfill (command line)', () => {
  it('backfill add --pds URL --wait backfills every repo and prints a summary', async () => {
    const res = await cli(['backfill', 'add', '--pds', pds.pdsUrl, '--wait']);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(new RegExp(`^started backfill-bulk/\\S+ \\(task queue ${taskQueue}\\)$`, 'm'));
    const n = sample.all.length;
    // The live line (not a terminal: one line each time it changes), before the summary.
    const live = [...res.stdout.matchAll(/^running: (\d+) repos, [\d.]+ records\/s, \d+ failed → resync.*, \d+ s$/gm)].map((m) => Number(m[1]));
    expect(live.length, res.stdout).toBeGreaterThan(0);
    expect(live, 'repos done never goes down').toEqual([...live].sort((a, b) => a - b));
    const summary = res.stdout.match(/^done: (\d+) repos \((\d+) imported, (\d+) unchanged, (\d+) failed → resync, 0 gone, 0 deleted, 0 dropped\), (\d+) records, \d+ new blocks, \d+ bytes$/m);
    expect(summary, res.stdout).not.toBeNull();
    const [, repos, imported, unchanged, failed] = summary!.map(Number);
    expect({ repos, failed, both: imported! + unchanged! }).toEqual({ repos: n, failed: 0, both: n });
    expect(await count(`SELECT count(*) AS n FROM repos WHERE status = 'active'`)).toBe(n);
    for (const acct of sample.all) {
      expect(await count('SELECT count(*) AS n FROM records WHERE did = $1', [acct.did])).toBe(sample.recordCounts[acct.did]);
    }
    expect(await refcountProblems(pool)).toEqual([]);
  });

  it('backfill status <did> prints the repo row and its workflow; backfill status sums by state', async () => {
    const big = sample.big!;
    const one = await cli(['backfill', 'status', big.did]);
    expect(one.code).toBe(0);
    const json = one.stdout.slice(0, one.stdout.lastIndexOf('}') + 1);
    expect(JSON.parse(json)).toMatchObject({ did: big.did, status: 'active', recordsCount: 5001, resyncKind: null, lastError: null });
    expect(one.stdout).toContain(`workflow backfill/${big.did}: done, retry 0`);

    const all = await cli(['backfill', 'status']);
    expect(all.code).toBe(0);
    expect(all.stdout).toMatch(new RegExp(`^active\\s+${sample.all.length} repos\\s+\\d+ records$`, 'm'));
  });

  it('backfill resync <did> starts backfill/<did> when none is running', async () => {
    const did = sample.alice.did;
    const res = await cli(['backfill', 'resync', did]);
    expect(res.code).toBe(0);
    expect(res.stdout).toContain(`started backfill/${did}`);
    const state = (await client.workflow.getHandle(`backfill/${did}`).result()) as BackfillRepoState;
    expect(state).toMatchObject({ did, state: 'done', lastOutcome: { kind: 'skipped' } });
  });

  it('backfill add not-a-did fails with a message naming it, before reaching any server', async () => {
    const res = await cli(['backfill', 'add', 'not-a-did']);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('not a did:plc or did:web DID: "not-a-did"');
    // Bad arguments are reported as such even when Temporal is unreachable.
    const offline = await cli(['backfill', 'add', 'not-a-did'], { TEMPORAL_ADDRESS: '127.0.0.1:1' });
    expect(offline.code).toBe(1);
    expect(offline.stderr).toContain('not a did:plc or did:web DID: "not-a-did"');
  });
});
