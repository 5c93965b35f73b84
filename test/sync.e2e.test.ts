/**
 * Live sync end to end against the REAL reference PDS (it serves subscribeRepos) and the real
 * stack: a worker running the sync and backfill jobs in this process, a `subscribe` workflow on
 * the PDS, and changes made through the PDS's own API. What the mirror holds is compared with
 * what the PDS says (listRecords, getLatestCommit).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { loadConfig } from '../config/load.ts';
import { resolveEndpoints } from '../config/resolve.ts';
import type { Config } from '../config/options.ts';
import { runWorker } from '../workers/worker.ts';
import { selectJobs, taskQueueFor } from '../workers/jobs.ts';
import { cancelSignal, progressQuery, subscribe, type SubscribeInput } from '../workflows/subscribe.ts';
import { freshDatabase, testStack } from './stack.ts';
import {
  activateAccount,
  createAccount,
  createRecord,
  deactivateAccount,
  deleteRecord,
  listAllRecords,
  pngBytes,
  putRecord,
  startPds,
  takedownAccount,
  uploadBlob,
  xrpcProcedure,
  xrpcQuery,
  type PdsServer,
  type TestAccount,
} from './pds.ts';
import { refcountProblems, waitFor } from './helpers.ts';

let pds: PdsServer;
let dataDir: string;
let blobDir: string;
let stateDir: string;
let databaseUrl: string;
let pool: pg.Pool;
let client: Client;
let config: Config;
let sub: WorkflowHandle<typeof subscribe>;
const workers: Array<{ stop: AbortController; done: Promise<void> }> = [];
const prefix = `sync-e2e-${process.pid}`;

async function startWorker(): Promise<Config> {
  const stack = testStack();
  const cfg = loadConfig({
    env: {
      REPOWALK_CACHE_DIR: process.env.REPOWALK_CACHE_DIR,
      REPOWALK_STATE_DIR: stateDir,
      REPOWALK_LOG_LEVEL: 'error',
      TEMPORAL_ADDRESS: stack.temporal.address,
      TEMPORAL_NAMESPACE: stack.temporal.namespace,
      DATABASE_URL: databaseUrl,
      REPOWALK_BLOB_DIR: blobDir,
      REPOWALK_TASK_QUEUE: prefix,
      REPOWALK_PLC_URL: pds.plcUrl,
      REPOWALK_ALLOW_PRIVATE_ADDRESSES: 'true',
    },
  });
  const stop = new AbortController();
  let ready!: () => void;
  const isReady = new Promise<void>((r) => (ready = r));
  const done = runWorker({ config: cfg, endpoints: resolveEndpoints(cfg), jobs: selectJobs(['backfill', 'sync'], [], []), signal: stop.signal, onReady: () => ready() });
  workers.push({ stop, done });
  await Promise.race([isReady, done.then(() => Promise.reject(new Error('worker stopped before it was ready')))]);
  return cfg;
}

async function latestRev(did: string): Promise<string> {
  return (await xrpcQuery<{ rev: string }>(pds, 'com.atproto.sync.getLatestCommit', { did })).rev;
}

async function repoRow(did: string) {
  const { rows } = await pool.query('SELECT status, gone_status, rev, handle FROM repos WHERE did = $1', [did]);
  return rows[0] as { status: string; gone_status: string | null; rev: string | null; handle: string | null } | undefined;
}

/** Waits until the mirror holds `did` at the PDS's latest rev. */
async function converged(did: string): Promise<void> {
  const rev = await latestRev(did);
  await waitFor(`${did} at rev ${rev}`, async () => (await repoRow(did))?.rev === rev, 60_000);
}

async function storedRecords(did: string): Promise<string[]> {
  const { rows } = await pool.query<{ p: string }>(`SELECT collection || '/' || rkey AS p FROM records WHERE did = $1 ORDER BY 1`, [did]);
  return rows.map((r) => r.p);
}

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'repowalk-sync-pds-'));
  blobDir = await mkdtemp(join(tmpdir(), 'repowalk-sync-blobs-'));
  stateDir = await mkdtemp(join(tmpdir(), 'repowalk-sync-state-'));
  const [p, db] = await Promise.all([startPds({ dataDir }), freshDatabase('sync_e2e')]);
  pds = p;
  databaseUrl = db;
  config = await startWorker();
  pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
  client = new Client({ connection: await Connection.connect({ address: testStack().temporal.address }), namespace: testStack().temporal.namespace });
  const input: SubscribeInput = { host: pds.pdsUrl, backfillTaskQueue: taskQueueFor(config, 'backfill'), runForSeconds: 30 };
  sub = await client.workflow.start(subscribe, { workflowId: `subscribe/${new URL(pds.pdsUrl).host}-${prefix}`, taskQueue: taskQueueFor(config, 'sync'), args: [input] });
  // The subscription is live once an account created now reaches the mirror.
  const probe = await createAccount(pds, 'probe');
  await createRecord(probe, 'app.bsky.feed.post', { text: 'probe', createdAt: new Date().toISOString() });
  await converged(probe.did);
}, 300_000);

afterAll(async () => {
  await sub?.signal(cancelSignal).catch(() => {});
  await sub?.result().catch(() => {});
  for (const w of workers) w.stop.abort();
  await Promise.allSettled(workers.map((w) => w.done));
  await client?.connection.close();
  await pool?.end();
  await pds?.stop();
  for (const d of [dataDir, blobDir, stateDir]) if (d) await rm(d, { recursive: true, force: true });
});

describe('live sync from the reference PDS', () => {
  let alice: TestAccount;

  it('follows creates, edits, deletes and a blob: records equal listRecords, one event per change, refcounts right', async () => {
    alice = await createAccount(pds, 'alice');
    const now = () => new Date().toISOString();
    const posts = [];
    for (let i = 0; i < 5; i++) posts.push(await createRecord(alice, 'app.bsky.feed.post', { text: `post ${i}`, createdAt: now() }));
    const rkey = (uri: string) => uri.split('/').pop()!;
    await putRecord(alice, 'app.bsky.feed.post', rkey(posts[1]!.uri), { text: 'post 1, edited', createdAt: now() });
    await deleteRecord(alice, 'app.bsky.feed.post', rkey(posts[2]!.uri));
    const blob = await uploadBlob(alice, pngBytes(8, 8, 1), 'image/png');
    await createRecord(alice, 'app.bsky.feed.post', { text: 'with image', createdAt: now(), embed: { $type: 'app.bsky.embed.images', images: [{ alt: '', image: blob }] } });
    await converged(alice.did);

    const listed = (await listAllRecords(pds, alice.did)).map((r) => `${r.collection}/${r.rkey}`).sort();
    expect(await storedRecords(alice.did)).toEqual(listed);
    const { rows } = await pool.query<{ kind: string; n: number }>(
      `SELECT kind, count(*)::int AS n FROM events WHERE did = $1 AND kind IN ('create', 'update', 'delete') GROUP BY kind ORDER BY kind`,
      [alice.did],
    );
    // Every create the PDS made (posts, the image post, and whatever it writes itself) once,
    // one update, one delete; all of them live.
    const created = listed.length + 1;
    expect(rows).toEqual([{ kind: 'create', n: created }, { kind: 'delete', n: 1 }, { kind: 'update', n: 1 }]);
    const origins = await pool.query(`SELECT DISTINCT origin FROM events WHERE did = $1`, [alice.did]);
    expect(origins.rows.map((r) => r.origin)).toEqual(['live']);
    expect(await refcountProblems(pool)).toEqual([]);
    const p = await sub.query(progressQuery);
    expect(p.state).toBe('running');
  });

  it('follows deactivation, reactivation, takedown and a handle change', async () => {
    await deactivateAccount(alice);
    await waitFor('alice deactivated', async () => (await repoRow(alice.did))?.gone_status === 'deactivated');
    await activateAccount(alice);
    await waitFor('alice active again', async () => (await repoRow(alice.did))?.status === 'active');
    await xrpcProcedure(pds, 'com.atproto.identity.updateHandle', { handle: 'alice2.test' }, { token: alice.accessJwt });
    await waitFor('the new handle', async () => (await repoRow(alice.did))?.handle === 'alice2.test');
    await takedownAccount(pds, alice.did);
    await waitFor('alice taken down', async () => (await repoRow(alice.did))?.gone_status === 'takendown');
    const { rows } = await pool.query(`SELECT kind, detail FROM events WHERE did = $1 AND kind IN ('account', 'identity') ORDER BY id`, [alice.did]);
    expect(rows.filter((r) => r.kind === 'account').map((r) => r.detail.status)).toEqual(['deactivated', 'active', 'takendown']);
    expect(rows.some((r) => r.kind === 'identity' && r.detail.handle === 'alice2.test')).toBe(true);
    expect(await storedRecords(alice.did)).not.toEqual([]);
  });
});
