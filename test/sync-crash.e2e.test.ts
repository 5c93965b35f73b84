/**
 * Live sync with a real `repowalk worker --job sync --job backfill` CHILD PROCESS, SIGKILLed while
 * events flow from the reference PDS: after a restart, every change lands exactly once (no event
 * lost, none doubled), because the cursor is committed in the same transaction as the events it
 * covers. Driven by the CLI (`repowalk sync start | status | stop`) as an operator would.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freshDatabase, testStack } from './stack.ts';
import { createAccount, createRecord, listAllRecords, startPds, xrpcQuery, type PdsServer } from './pds.ts';
import { refcountProblems, sleep, validateFindings, waitFor } from './helpers.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';

const ROOT = join(import.meta.dirname, '..');
const prefix = `sync-crash-${process.pid}`;
let pds: PdsServer;
let dataDir: string;
let blobDir: string;
let stateDir: string;
let databaseUrl: string;
let pool: pg.Pool;
let worker: { child: ChildProcess; output: () => string; exited: Promise<unknown> } | undefined;

function env(): NodeJS.ProcessEnv {
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
  };
}

async function startWorkerProcess() {
  const child = spawn(join(ROOT, 'repowalk'), ['worker', '--job', 'sync', '--job', 'backfill'], { env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  const exited = new Promise((r) => child.once('exit', r));
  await waitFor(`worker ready:\n${output}`, async () => {
    if (child.exitCode !== null) throw new Error(`worker exited ${child.exitCode}:\n${output}`);
    return output.includes('worker running jobs');
  }, 120_000);
  return { child, output: () => output, exited };
}

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(join(ROOT, 'repowalk'), args, { env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'repowalk-syncc-pds-'));
  blobDir = await mkdtemp(join(tmpdir(), 'repowalk-syncc-blobs-'));
  stateDir = await mkdtemp(join(tmpdir(), 'repowalk-syncc-state-'));
  const [p, db] = await Promise.all([startPds({ dataDir }), freshDatabase('sync_crash')]);
  pds = p;
  databaseUrl = db;
  worker = await startWorkerProcess();
  pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
}, 300_000);

afterAll(async () => {
  await cli(['sync', 'stop', pds.pdsUrl]).catch(() => {});
  if (worker && worker.child.exitCode === null && worker.child.signalCode === null) {
    worker.child.kill('SIGTERM');
    await worker.exited;
  }
  await pool?.end();
  await pds?.stop();
  for (const d of [dataDir, blobDir, stateDir]) if (d) await rm(d, { recursive: true, force: true });
}, 120_000);

describe('live sync across a SIGKILL of the worker', () => {
  it('loses no event and doubles none', async () => {
    const started = await cli(['sync', 'start', pds.pdsUrl, '--run-seconds', '30', '--max-batch', '5']);
    expect(started.code, started.stderr).toBe(0);
    expect(started.stdout).toContain(`subscribe/${new URL(pds.pdsUrl).host}`);
    const erin = await createAccount(pds, 'erin');
    const total = 60;
    let written = 0;
    const writing = (async () => {
      for (; written < total; written++) {
        await createRecord(erin, 'app.bsky.feed.post', { text: `post ${written}`, createdAt: new Date().toISOString() });
        await sleep(50);
      }
    })();
    const stored = async () => Number((await pool.query(`SELECT count(*)::int AS n FROM records WHERE did = $1`, [erin.did])).rows[0].n);
    await waitFor('some of erin\'s posts mirrored', async () => (await stored()) >= 10);
    worker!.child.kill('SIGKILL');
    await worker!.exited;
    const atKill = await stored();
    expect(atKill).toBeLessThan(total);
    await sleep(1000);
    worker = await startWorkerProcess();
    await writing;

    const rev = (await xrpcQuery<{ rev: string }>(pds, 'com.atproto.sync.getLatestCommit', { did: erin.did })).rev;
    await waitFor('erin at the PDS\'s rev', async () => (await pool.query('SELECT rev FROM repos WHERE did = $1', [erin.did])).rows[0]?.rev === rev, 120_000);
    const listed = (await listAllRecords(pds, erin.did)).map((r) => `${r.collection}/${r.rkey}`).sort();
    expect(listed).toHaveLength(total);
    const { rows } = await pool.query<{ p: string; n: number }>(
      `SELECT collection || '/' || rkey AS p, count(*)::int AS n FROM events WHERE did = $1 AND kind = 'create' GROUP BY 1 ORDER BY 1`,
      [erin.did],
    );
    expect(rows.map((r) => r.p)).toEqual(listed);
    expect(rows.every((r) => r.n === 1)).toBe(true);
    expect(await refcountProblems(pool)).toEqual([]);
    expect(await validateFindings({ pool, store: new LocalBlobStore(blobDir) })).toEqual([]);

    const status = await cli(['sync', 'status', pds.pdsUrl, '--once']);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/running.*cursor \d+/);
    expect(status.stdout).toMatch(/#commit \d+/);
  }, 300_000);
});
