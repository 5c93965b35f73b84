/**
 * Live sync, served: the mirror follows the REAL reference PDS through a `subscribe` workflow
 * (its firehose, applied by a worker running the sync and backfill jobs in this process), and
 * the official `@atproto/tap` client, connected to the serve server over the same database and
 * blobstore, receives the changes made through the PDS's own API as they arrive: `live: true`,
 * acked, across a disconnect, with no loss and no duplicates.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import type { Config } from '../config/options.ts';
import { taskQueueFor } from '../workers/jobs.ts';
import { cancelSignal, subscribe, type SubscribeInput } from '../workflows/subscribe.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { startServeServer, type ServeServer } from '../serve/server.ts';
import { freshDatabase, testStack } from './stack.ts';
import { inProcessWorkerEnv, startInProcessWorker, type InProcessWorker } from './in-process-worker.ts';
import { createAccount, createRecord, deleteRecord, listAllRecords, putRecord, startPds, xrpcQuery, type PdsServer, type TestAccount } from './pds.ts';
import { waitFor } from './helpers.ts';

let pds: PdsServer;
let dataDir: string;
let blobDir: string;
let stateDir: string;
let pool: pg.Pool;
let client: Client;
let config: Config;
let sub: WorkflowHandle<typeof subscribe>;
let serve: ServeServer;
let worker: InProcessWorker | undefined;
const prefix = `serve-live-${process.pid}`;

async function converged(did: string): Promise<void> {
  const { rev } = await xrpcQuery<{ rev: string }>(pds, 'com.atproto.sync.getLatestCommit', { did });
  await waitFor(`${did} at rev ${rev}`, async () => (await pool.query('SELECT 1 FROM repos WHERE did = $1 AND rev = $2', [did, rev])).rowCount === 1, 60_000);
}

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'repowalk-serve-live-pds-'));
  blobDir = await mkdtemp(join(tmpdir(), 'repowalk-serve-live-blobs-'));
  stateDir = await mkdtemp(join(tmpdir(), 'repowalk-serve-live-state-'));
  const [p, databaseUrl] = await Promise.all([startPds({ dataDir }), freshDatabase('serve_live')]);
  pds = p;
  const stack = testStack();
  worker = await startInProcessWorker(
    inProcessWorkerEnv({ stateDir, databaseUrl, blobDir, taskQueue: prefix, plcUrl: pds.plcUrl }, { REPOWALK_VERIFY_HANDLES: 'false' }),
    ['backfill', 'sync'],
  );
  config = worker.config;
  pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
  serve = await startServeServer({ pool, store: new LocalBlobStore(blobDir), stream: { stallTimeoutMs: 10_000 }, log: () => {} });
  client = new Client({ connection: await Connection.connect({ address: stack.temporal.address }), namespace: stack.temporal.namespace });
  const input: SubscribeInput = { host: pds.pdsUrl, backfillTaskQueue: taskQueueFor(config, 'backfill'), runForSeconds: 30 };
  sub = await client.workflow.start(subscribe, { workflowId: `subscribe/${new URL(pds.pdsUrl).host}-${prefix}`, taskQueue: taskQueueFor(config, 'sync'), args: [input] });
  // The subscription is live once an account created now reaches the mirror: one created before
  // it connects would come in by a resync (a backfill), not as live events.
  const probe = await createAccount(pds, 'probe');
  await createRecord(probe, 'app.bsky.feed.post', { text: 'probe', createdAt: new Date().toISOString() });
  await converged(probe.did);
}, 300_000);

afterAll(async () => {
  await sub?.signal(cancelSignal).catch(() => {});
  await sub?.result().catch(() => {});
  await serve?.close();
  worker?.stop.abort();
  await worker?.done.catch(() => {});
  await client?.connection.close();
  await pool?.end();
  await pds?.stop();
  for (const d of [dataDir, blobDir, stateDir]) if (d) await rm(d, { recursive: true, force: true });
}, 60_000);

describe('the tap client follows live sync through the serve stream', () => {
  type Seen = { id: number; did: string; action: string; path: string; cid?: string; live: boolean };

  it('receives every change made at the PDS as a live record event, acks, reconnects, no loss, no duplicates', async () => {
    const { Tap } = await import('@atproto/tap');
    const tap = new Tap(`${serve.url}/?consumer=tap-live`);
    const seen: Seen[] = [];
    const errors: Error[] = [];
    const open = () => {
      const channel = tap.channel({
        onEvent: async (evt, opts) => {
          if (evt.type !== 'record') return void (await opts.ack());
          if (evt.action !== 'delete') expect(evt.record).toBeDefined();
          await opts.ack();
          seen.push({ id: evt.id, did: evt.did, action: evt.action, path: `${evt.collection}/${evt.rkey}`, ...(evt.cid ? { cid: evt.cid } : {}), live: evt.live });
        },
        onError: (err) => errors.push(err),
      });
      return { channel, running: channel.start() };
    };
    const until = async (what: string, ok: () => boolean) => waitFor(what, async () => ok(), 60_000);
    const recordEvents = async (did: string) =>
      (await pool.query<{ id: string; origin: string }>(`SELECT id, origin FROM events WHERE did = $1 AND kind IN ('create', 'update', 'delete') ORDER BY id`, [did])).rows;

    // Connected before the account exists: everything it gets comes from the firehose.
    const first = open();
    const alice: TestAccount = await createAccount(pds, 'livetap');
    const now = () => new Date().toISOString();
    const rkey = (uri: string) => uri.split('/').pop()!;
    const posts = [];
    for (let i = 0; i < 6; i++) posts.push(await createRecord(alice, 'app.bsky.feed.post', { text: `live ${i}`, createdAt: now() }));
    await putRecord(alice, 'app.bsky.feed.post', rkey(posts[1]!.uri), { text: 'live 1, edited', createdAt: now() });
    await deleteRecord(alice, 'app.bsky.feed.post', rkey(posts[2]!.uri));
    await converged(alice.did);
    const firstPart = await recordEvents(alice.did);
    await until('the first live events', () => seen.filter((e) => e.did === alice.did).length >= firstPart.length);

    // The consumer goes away; changes made meanwhile reach it when it comes back.
    await first.channel.destroy();
    await first.running;
    for (let i = 6; i < 10; i++) await createRecord(alice, 'app.bsky.feed.post', { text: `while away ${i}`, createdAt: now() });
    await converged(alice.did);
    const all = await recordEvents(alice.did);
    expect(all.length).toBeGreaterThan(firstPart.length);
    const second = open();
    await until('the events made while away', () => seen.filter((e) => e.did === alice.did).length >= all.length);
    // Anything more would be a duplicate: give it the time to show up.
    await new Promise((r) => setTimeout(r, 500));
    await second.channel.destroy();
    await second.running;

    expect(errors).toEqual([]);
    const mine = seen.filter((e) => e.did === alice.did);
    expect(mine.map((e) => e.id)).toEqual(all.map((r) => Number(r.id))); // no loss, no duplicates, in order
    expect(all.every((r) => r.origin === 'live')).toBe(true);
    expect(mine.every((e) => e.live)).toBe(true);
    expect(mine.filter((e) => e.action === 'update').map((e) => e.path)).toEqual([`app.bsky.feed.post/${rkey(posts[1]!.uri)}`]);
    expect(mine.filter((e) => e.action === 'delete').map((e) => e.path)).toEqual([`app.bsky.feed.post/${rkey(posts[2]!.uri)}`]);
    // Replaying the creates and updates in order gives what the PDS holds.
    const state = new Map<string, string>();
    for (const e of mine) {
      if (e.action === 'delete') state.delete(e.path);
      else state.set(e.path, e.cid!);
    }
    const listed = await listAllRecords(pds, alice.did);
    expect(new Map(listed.map((r) => [`${r.collection}/${r.rkey}`, r.cid]))).toEqual(state);
  });
});
