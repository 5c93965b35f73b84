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
import type { Config } from '../config/options.ts';
import { taskQueueFor } from '../workers/jobs.ts';
import { cancelSignal, pauseSignal, progressQuery, resumeSignal, subscribe, type SubscribeInput } from '../workflows/subscribe.ts';
import { freshDatabase, testStack } from './stack.ts';
import { inProcessWorkerEnv, startInProcessWorker } from './in-process-worker.ts';
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
import { refcountProblems, sleep, validateFindings, waitFor } from './helpers.ts';
import { decodeFrameParts, encodeFrame, recordFrames, startFirehoseServer, type FirehoseServer, type ScriptedFrame } from './firehose-server.ts';
import { readCarBlocks, resignCommit } from '../atproto/testing/car-edit.ts';
import { newKeypair } from '../atproto/testing/make-repo.ts';
import { createServer } from 'node:http';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { refreshRepo, storedHead } from '../sync/refresh.ts';
import { FilterOptions } from '../backfill/filters.ts';
import { refresh } from '../workflows/subscribe-refresh.ts';
import { cidToString } from '../atproto/cid.ts';
import { existsSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import { DatabaseSync } from 'node:sqlite';
import { Secp256k1Keypair } from '@atproto/crypto';
import { MockActivityEnvironment } from '@temporalio/testing';
import { backfillRepo } from '../workflows/backfill-repo.ts';
import { maintenanceActivities } from '../activities/maintenance.ts';
import { recheckGone } from '../maintenance/gone-check.ts';
import { getRepoStatus } from '../atproto/net/index.ts';
import { PgHealQueue } from '../storage/db/heal-queue.ts';

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
  const env = inProcessWorkerEnv(
    { stateDir, databaseUrl, blobDir, taskQueue: prefix, plcUrl: pds.plcUrl },
    // The test PDS's handles (*.test) resolve nowhere; the handle-change test reads them as claimed.
    { REPOWALK_VERIFY_HANDLES: 'false' },
  );
  const w = await startInProcessWorker(env, ['backfill', 'sync']);
  workers.push(w);
  return w.config;
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

let faults: FirehoseServer | undefined;
let faultSub: WorkflowHandle<typeof subscribe> | undefined;

afterAll(async () => {
  for (const h of [sub, faultSub]) {
    await h?.signal(cancelSignal).catch(() => {});
    await h?.result().catch(() => {});
  }
  await faults?.stop();
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
    expect(await validateFindings({ pool, store: new LocalBlobStore(blobDir) })).toEqual([]);
    const p = await sub.query(progressQuery);
    expect(p.state).toBe('running');
  });

  it('pauses (nothing applied, RepowalkState paused) and resumes from its cursor', async () => {
    await sub.signal(pauseSignal);
    await waitFor('paused', async () => (await sub.query(progressQuery)).state === 'paused');
    const rev = (await repoRow(alice.did))!.rev;
    await createRecord(alice, 'app.bsky.feed.post', { text: 'while paused', createdAt: new Date().toISOString() });
    await sleep(2000);
    expect((await repoRow(alice.did))!.rev).toBe(rev);
    await waitFor('listed as paused', async () => {
      for await (const w of client.workflow.list({ query: `WorkflowId = '${sub.workflowId}' AND RepowalkState = 'paused'` })) return w.workflowId === sub.workflowId;
      return false;
    });
    await sub.signal(resumeSignal);
    await converged(alice.did);
    expect((await sub.query(progressQuery)).state).toBe('running');
  });

  it('follows deactivation, reactivation, takedown and a handle change', async () => {
    await deactivateAccount(alice);
    await waitFor('alice deactivated', async () => (await repoRow(alice.did))?.gone_status === 'deactivated');
    // Due for the gone re-check (the settings' goneRecheckSeconds, a week by default), which asks the PDS if it is back.
    const due = (await pool.query('SELECT next_retry_at FROM repos WHERE did = $1', [alice.did])).rows[0].next_retry_at as Date | null;
    expect(due?.getTime()).toBeGreaterThan(Date.now() + 6 * 86400_000);
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

  it('follows a signing-key rotation: the commits signed with the new key apply, with no resync', async () => {
    const rotor = await createAccount(pds, 'rotor');
    await createRecord(rotor, 'app.bsky.feed.post', { text: 'old key', createdAt: new Date().toISOString() });
    await converged(rotor.did);
    const oldKey = (await pool.query('SELECT signing_key FROM repos WHERE did = $1', [rotor.did])).rows[0].signing_key as string;
    // The PDS's own rotation: a PLC operation naming a new atproto key (signed by the PDS with
    // the email token it issued), and the account's key file replaced by that key, which the PDS
    // checks before submitting and signs every later commit with.
    const frameErrors = async () => Number((await pool.query('SELECT count(*) AS n FROM sync_frame_errors')).rows[0].n);
    const errorsBefore = await frameErrors();
    const next = await Secp256k1Keypair.create({ exportable: true });
    expect(next.did()).not.toBe(oldKey);
    const auth = { token: rotor.accessJwt };
    await xrpcProcedure(pds, 'com.atproto.identity.requestPlcOperationSignature', undefined, auth);
    const db = new DatabaseSync(join(pds.dataDir, 'account.sqlite'), { readOnly: true });
    const { token } = db.prepare(`SELECT token FROM email_token WHERE did = ? AND purpose = 'plc_operation'`).get(rotor.did) as { token: string };
    db.close();
    const { operation } = await xrpcProcedure<{ operation: unknown }>(pds, 'com.atproto.identity.signPlcOperation', { token, verificationMethods: { atproto: next.did() } }, auth);
    const keyDir = (await readdir(join(pds.dataDir, 'actors'))).map((d) => join(pds.dataDir, 'actors', d, rotor.did)).find((d) => existsSync(d))!;
    await writeFile(join(keyDir, 'key'), await next.export());
    await xrpcProcedure(pds, 'com.atproto.identity.submitPlcOperation', { operation }, auth);
    for (let i = 0; i < 2; i++) await createRecord(rotor, 'app.bsky.feed.post', { text: `new key ${i}`, createdAt: new Date().toISOString() });
    await converged(rotor.did);

    expect((await pool.query('SELECT signing_key FROM repos WHERE did = $1', [rotor.did])).rows[0].signing_key).toBe(next.did());
    expect(await storedRecords(rotor.did)).toEqual((await listAllRecords(pds, rotor.did)).map((r) => `${r.collection}/${r.rkey}`).sort());
    // Applied live, not through a resync: every event is live, none refused.
    const origins = await pool.query(`SELECT DISTINCT origin FROM events WHERE did = $1`, [rotor.did]);
    expect(origins.rows.map((r) => r.origin)).toEqual(['live']);
    expect(await frameErrors()).toBe(errorsBefore);
    await expect(client.workflow.getHandle(`backfill/${rotor.did}`).describe()).rejects.toThrow(/not found/i);
  });
});

describe('live sync through a faulty upstream', () => {
  it('names each fault (bad signature, bad proof, since gap, malformed and unknown frames, OutdatedCursor, reset mid-frame) and keeps running', async () => {
    // The PDS subscription stops, so that these accounts reach the mirror only through the faulty one.
    await sub.signal(cancelSignal);
    await sub.result();
    const accounts: TestAccount[] = [];
    for (const name of ['bob', 'carol', 'dave']) {
      const a = await createAccount(pds, name);
      for (let i = 0; i < 2; i++) await createRecord(a, 'app.bsky.feed.post', { text: `${name} ${i}`, createdAt: new Date().toISOString() });
      accounts.push(a);
    }
    const [bob, carol, dave] = accounts as [TestAccount, TestAccount, TestAccount];
    const latest = new Map(await Promise.all(accounts.map(async (a) => [a.did, await latestRev(a.did)] as const)));
    const seen = new Set<string>();
    const recorded = await recordFrames(pds.pdsUrl, (frames) => {
      const { header, body } = decodeFrameParts(frames[frames.length - 1]!);
      if (header.t === '#commit' && latest.get(body.repo as string) === body.rev) seen.add(body.repo as string);
      return seen.size === accounts.length;
    });
    const mine = (b: Record<string, unknown>) => latest.has((b.repo ?? b.did) as string);

    const otherKey = await newKeypair();
    const script: ScriptedFrame[] = [{ seq: undefined, bytes: encodeFrame({ op: 1, t: '#info' }, { name: 'OutdatedCursor', message: 'cursor too old' }) }];
    let seq = 100;
    for (const bytes of recorded) {
      const { header, body } = decodeFrameParts(bytes);
      if (!mine(body)) continue;
      body.seq = seq;
      if (header.t === '#commit' && latest.get(body.repo as string) === body.rev) {
        const blocks = (body.blocks as { buf: Uint8Array }).buf;
        if (body.repo === bob.did) {
          const car = await resignCommit(blocks, otherKey);
          body.blocks = (await import('@atcute/cbor')).toBytes(car);
          body.commit = { $link: readCarBlocks(car).root };
        } else if (body.repo === carol.did) {
          body.prevData = body.commit; // a CID, but not the previous data root
        } else {
          body.since = '2222222222222';
        }
      }
      script.push({ seq, bytes: encodeFrame(header, body) });
      if (seq === 100) {
        script.push({ seq: undefined, bytes: new Uint8Array([0xa2, 0x61, 0x74, 0xff, 0x00, 0x13]) });
        script.push({ seq: seq + 5, bytes: encodeFrame({ op: 1, t: '#labels' }, { seq: seq + 5, labels: [] }) });
      }
      seq += 10;
    }
    script[script.length - 1]!.resetMidFrame = true;
    faults = await startFirehoseServer(script);
    faultSub = await client.workflow.start(subscribe, {
      workflowId: `subscribe/faults-${prefix}`,
      taskQueue: taskQueueFor(config, 'sync'),
      args: [{ host: faults.url, backfillTaskQueue: taskQueueFor(config, 'backfill'), runForSeconds: 10 }],
    });

    // Each faulty account is resynced from the PDS and ends where the PDS is.
    for (const a of accounts) {
      await converged(a.did);
      const listed = (await listAllRecords(pds, a.did)).map((r) => `${r.collection}/${r.rkey}`).sort();
      expect(await storedRecords(a.did)).toEqual(listed);
    }
    const problems = async () => (await pool.query<{ problem: string; seq: string | null }>('SELECT problem, seq FROM sync_frame_errors ORDER BY id')).rows;
    await waitFor('every fault recorded', async () => {
      const got = new Set((await problems()).map((p) => p.problem));
      return ['info:OutdatedCursor', 'frame-malformed', 'frame-unknown-type', 'bad-signature', 'bad-proof'].every((p) => got.has(p));
    });
    const rows = await problems();
    expect(rows.find((r) => r.problem === 'frame-unknown-type')?.seq).toBe('105');
    expect(rows.filter((r) => r.problem === 'bad-signature')).toHaveLength(1);
    // The reset cut the last frame: the consumer came back from the cursor before it, and got it.
    await waitFor('a reconnect after the reset', async () => faults!.connections.length >= 2);
    expect(faults.connections[1]).toBe(seq - 20);
    const last = script[script.length - 1]!.seq!;
    await waitFor('the cut frame applied after the reconnect', async () => {
      const { rows: c } = await pool.query(`SELECT value FROM job_state WHERE key = $1`, [`sync/cursor/${new URL(faults!.url).host}`]);
      return c[0]?.value.seq === last;
    });
    let lastProgress: unknown;
    const p = await waitFor('the totals of a finished run', async () => {
      const q = await faultSub!.query(progressQuery);
      lastProgress = q;
      return (q.totals.outcomes.gap ?? 0) >= 1 && q.totals.reconnects >= 1 && q;
    }).catch((err: Error) => {
      throw new Error(`${err.message}; last progress ${JSON.stringify(lastProgress)}`);
    });
    expect(p.state).toBe('running');
    expect(p.totals.outdatedCursor).toBe(1);
    expect(p.totals.frames.malformed).toBe(1);
    expect(p.totals.resyncs).toBeGreaterThanOrEqual(3);
    expect(await refcountProblems(pool)).toEqual([]);
    const { rows: dv } = await pool.query(`SELECT count(*)::int AS n FROM events WHERE did = $1 AND kind = 'create'`, [dave.did]);
    expect(dv[0].n).toBe((await listAllRecords(pds, dave.did)).length);
  }, 240_000);
});

/** A loopback proxy in front of the PDS that remembers each request's URL (path and query). */
async function recordingProxy(upstream: string): Promise<{ url: string; seen: string[]; stop: () => Promise<void> }> {
  const seen: string[] = [];
  const server = createServer(async (req, res) => {
    seen.push(req.url ?? '');
    const r = await fetch(new URL(req.url ?? '/', upstream), { headers: { accept: req.headers.accept ?? '*/*' } });
    res.writeHead(r.status, { 'content-type': r.headers.get('content-type') ?? 'application/octet-stream' });
    res.end(Buffer.from(await r.arrayBuffer()));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, seen, stop: () => new Promise((r) => server.close(() => r())) };
}

describe('refresh without a subscription', () => {
  it('asks getLatestCommit, fetches getRepo?since= the stored rev, and lands where the PDS is', async () => {
    // bob is mirrored (the fault test resynced him) and no subscription follows the PDS now.
    const { rows } = await pool.query<{ did: string }>(`SELECT did FROM repos WHERE handle = 'bob.test'`);
    const bobDid = rows[0]!.did;
    const bob = await (await import('./pds.ts')).createSession(pds, 'bob.test', 'pw-bob.test');
    const before = (await storedHead(pool, bobDid))!;
    const mark = Number((await pool.query('SELECT max(id) AS m FROM events')).rows[0].m);
    const made: Array<Awaited<ReturnType<typeof createRecord>>> = [];
    for (let i = 0; i < 2; i++) made.push(await createRecord(bob, 'app.bsky.feed.post', { text: `later ${i}`, createdAt: new Date().toISOString() }));
    const listedBefore = await listAllRecords(pds, bobDid);
    const old = listedBefore.find((r) => !made.some((m) => m.uri === r.uri))!;
    await putRecord(bob, old.collection, old.rkey, { text: 'edited later', createdAt: new Date().toISOString() });
    await deleteRecord(bob, 'app.bsky.feed.post', made[0]!.uri.split('/').pop()!);

    const proxy = await recordingProxy(pds.pdsUrl);
    try {
      const out = await refreshRepo({ pool, blobs: new LocalBlobStore(blobDir) }, { ...before, pds: proxy.url }, {
        filter: FilterOptions.parse({}), http: { allowPrivate: true }, maxCarBytes: 64 * 1024 * 1024,
      });
      expect(out).toMatchObject({ kind: 'refreshed', since: before.rev, created: 1, updated: 1, deleted: 0 });
      expect(proxy.seen.some((u) => u.startsWith('/xrpc/com.atproto.sync.getLatestCommit'))).toBe(true);
      const getRepo = proxy.seen.filter((u) => u.startsWith('/xrpc/com.atproto.sync.getRepo?'));
      expect(getRepo).toHaveLength(1);
      expect(new URL(getRepo[0]!, 'http://x').searchParams.get('since')).toBe(before.rev);
    } finally {
      await proxy.stop();
    }
    const latest = await xrpcQuery<{ cid: string; rev: string }>(pds, 'com.atproto.sync.getLatestCommit', { did: bobDid });
    const row = (await pool.query('SELECT rev, head_cid FROM repos WHERE did = $1', [bobDid])).rows[0];
    expect({ rev: row.rev, head: cidToString(row.head_cid, 0) }).toEqual({ rev: latest.rev, head: latest.cid });
    const listed = (await listAllRecords(pds, bobDid)).map((r) => `${r.collection}/${r.rkey}`).sort();
    expect(await storedRecords(bobDid)).toEqual(listed);
    const ev = await pool.query(`SELECT kind FROM events WHERE did = $1 AND id > $2 ORDER BY kind`, [bobDid, mark]);
    expect(ev.rows.map((r) => r.kind)).toEqual(['create', 'update']);
    expect(await refcountProblems(pool)).toEqual([]);

    // The same through the refresh workflow: only the repo whose rev moved is fetched.
    await createRecord(bob, 'app.bsky.feed.post', { text: 'latest', createdAt: new Date().toISOString() });
    const totals = await client.workflow.execute(refresh, {
      workflowId: `refresh-${prefix}`,
      taskQueue: taskQueueFor(config, 'sync'),
      args: [{ backfillTaskQueue: taskQueueFor(config, 'backfill') }],
    });
    expect(totals.outcomes.refreshed).toBe(1);
    expect(totals.outcomes.unchanged).toBeGreaterThanOrEqual(3);
    expect(totals.backfills).toBe(0);
    await converged(bobDid);
    expect(await storedRecords(bobDid)).toEqual((await listAllRecords(pds, bobDid)).map((r) => `${r.collection}/${r.rkey}`).sort());
    expect(await refcountProblems(pool)).toEqual([]);
    // Everything live sync, its resyncs and the refresh stored, walked and checked.
    expect(await validateFindings({ pool, store: new LocalBlobStore(blobDir) })).toEqual([]);
  });
});

describe('gone re-check against the reference PDS', () => {
  it('asks getRepoStatus only: a deactivated repo stays gone without a download; reactivated, it is found active', async () => {
    const gwen = await createAccount(pds, 'gwen');
    await createRecord(gwen, 'app.bsky.feed.post', { text: 'before leaving', createdAt: new Date().toISOString() });
    await deactivateAccount(gwen);
    // Backfill finds it deactivated: gone, with a re-check time.
    await client.workflow.execute(backfillRepo, {
      workflowId: `backfill/${gwen.did}`,
      taskQueue: taskQueueFor(config, 'backfill'),
      args: [{ did: gwen.did }],
    });
    expect(await repoRow(gwen.did)).toMatchObject({ status: 'gone', gone_status: 'deactivated' });
    const eventsBefore = Number((await pool.query(`SELECT count(*) AS n FROM events WHERE did = $1`, [gwen.did])).rows[0].n);

    const proxy = await recordingProxy(pds.pdsUrl);
    try {
      const verdicts = await recheckGone({ pool, recheckSeconds: 3600, repoStatus: (did) => getRepoStatus(proxy.url, did, { allowPrivate: true }) }, [gwen.did]);
      expect(verdicts).toEqual([{ did: gwen.did, verdict: 'still-gone', status: 'deactivated' }]);
      expect(proxy.seen).toEqual([`/xrpc/com.atproto.sync.getRepoStatus?did=${encodeURIComponent(gwen.did)}`]);
    } finally {
      await proxy.stop();
    }
    const row = (await pool.query('SELECT status, gone_status, next_retry_at FROM repos WHERE did = $1', [gwen.did])).rows[0];
    expect(row).toMatchObject({ status: 'gone', gone_status: 'deactivated' });
    expect((row.next_retry_at as Date).getTime()).toBeGreaterThan(Date.now() + 3500_000);
    expect(Number((await pool.query(`SELECT count(*) AS n FROM events WHERE did = $1`, [gwen.did])).rows[0].n)).toBe(eventsBefore);

    // Reactivated: the activity (resolving the DID through the test PLC) finds it active.
    await activateAccount(gwen);
    const stores = { pool, blobs: new LocalBlobStore(blobDir), healQueue: new PgHealQueue(pool), close: async () => {} };
    const acts = maintenanceActivities({ stores, config });
    const again = await new MockActivityEnvironment().run(acts.recheckGone, { dids: [gwen.did], recheckSeconds: 3600 });
    expect(again).toEqual([{ did: gwen.did, verdict: 'active' }]);
  });
});
