/**
 * The batched store on real stores (PostgreSQL from the test stack, a directory blobstore), with
 * real signed repos: many repos and commits in one batch, one pack and one transaction, each
 * outcome its own.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import * as TID from '@atcute/tid';
import { freshDatabase } from '../test/stack.ts';
import { refcountProblems } from '../test/helpers.ts';
import { connectPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { EVENT_WRITER_LOCK_KEY, GC_LOCK_KEY } from '../storage/db/locks.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { verifyRepo, type VerifiedRepo } from '../atproto/verify.ts';
import { cidBytes } from '../atproto/cid.ts';
import { generateRecords, makeRepo, newKeypair, type RecordInput, type TestKeypair } from '../atproto/testing/make-repo.ts';
import { unreadableBlocks } from '../test/gc-fixtures.ts';
import { collectGarbage } from '../maintenance/gc.ts';
import { storeBatch } from './store.ts';
import { StoreBatcher } from './batcher.ts';
import type { CommitChange, CommitOp, RepoChange, SnapshotChange } from './changes.ts';

let pool: pg.Pool;
let blobs: LocalBlobStore;
let blobDir: string;
let keypair: TestKeypair;
const FULL = { keeps: () => true, keepsRepo: () => true, dropsRepos: false };
const opts = { filter: FULL, origin: 'live' as const };

beforeAll(async () => {
  pool = await connectPool(await freshDatabase('ingest'));
  await migrate(pool);
  blobDir = mkdtempSync(join(tmpdir(), 'repowalk-ingest-'));
  blobs = new LocalBlobStore(blobDir);
  keypair = await newKeypair();
});
afterAll(async () => pool?.end());

const rev = (n: number) => TID.create(1_700_000_000_000_000 + n * 1_000_000, 0);
const didN = (i: number) => `did:plc:ingest${'a'.repeat(16)}${'abcdefghijklmnopqrstuvwxyz234567'[i]}${'b'.repeat(1)}`.slice(0, 32);

async function verified(did: string, records: RecordInput[], r: number): Promise<VerifiedRepo> {
  const made = await makeRepo({ did, records, keypair, rev: rev(r) });
  return verifyRepo(made.car, { did, signingKey: made.signingKey });
}

function snapshot(repo: VerifiedRepo): SnapshotChange {
  return { kind: 'snapshot', repo, pds: 'https://pds.example', handle: undefined, signingKey: 'did:key:zQ3shtest' };
}

/** The commit that takes `from` to `to`, as the firehose would carry it (all of `to`'s blocks). */
function commitBetween(from: VerifiedRepo, to: VerifiedRepo, since = from.rev): CommitChange {
  const before = new Map(from.records.map((r) => [r.path, r]));
  const after = new Map(to.records.map((r) => [r.path, r]));
  const ops: CommitOp[] = [];
  for (const [p, r] of after) {
    const b = before.get(p);
    if (!b) ops.push({ action: 'create', collection: r.collection, rkey: r.rkey, cid: r.cid, prev: null });
    else if (b.cid !== r.cid) ops.push({ action: 'update', collection: r.collection, rkey: r.rkey, cid: r.cid, prev: b.cid });
  }
  for (const [p, b] of before) if (!after.has(p)) ops.push({ action: 'delete', collection: b.collection, rkey: b.rkey, cid: null, prev: b.cid });
  const blocks = new Map<string, Uint8Array>();
  for (const c of [to.commitCid, ...to.mstNodes, ...to.records.map((r) => r.cid)]) blocks.set(c, to.blocks.get(c)!);
  return { kind: 'commit', did: to.did, rev: to.rev, since, commitCid: to.commitCid, dataCid: to.dataCid, prevData: from.dataCid, ops, blocks, mstNodes: to.mstNodes };
}

async function stored(did: string): Promise<string[]> {
  const { rows } = await pool.query<{ p: string; cid: Buffer }>(`SELECT collection || '/' || rkey AS p, cid FROM records WHERE did = $1 ORDER BY 1`, [did]);
  return rows.map((r) => `${r.p}=${r.cid.toString('hex')}`);
}
const expected = (repo: VerifiedRepo) => repo.records.map((r) => `${r.path}=${cidBytes(r.cid).toString('hex')}`).sort();
const packCount = () => readdirSync(join(blobDir, 'packs'), { recursive: true }).filter((f) => String(f).endsWith('.car')).length;

describe('storeBatch', () => {
  const base = generateRecords(20);
  const edited = [...base.slice(2).map((r, i) => (i < 2 ? { ...r, value: { ...r.value, text: `edited ${i}` } } : r)), ...generateRecords(23).slice(20)];
  const v1: VerifiedRepo[] = [];
  const v2: VerifiedRepo[] = [];

  beforeAll(async () => {
    for (let i = 0; i < 4; i++) {
      v1.push(await verified(didN(i), base.map((r) => ({ ...r, value: { ...r.value, repo: i } })), 1));
      v2.push(await verified(didN(i), edited.map((r) => ({ ...r, value: { ...r.value, repo: i } })), 2));
    }
  });

  it('stores many repos in one pack and one transaction, each with its own outcome', async () => {
    const packsBefore = (await pool.query('SELECT count(*)::int AS n FROM packs')).rows[0].n;
    const result = await storeBatch({ pool, blobs }, v1.map(snapshot), { ...opts, origin: 'backfill', cursor: { key: 'test/cursor', value: { seq: 1 } } });
    expect(result.outcomes.map((o) => o.kind)).toEqual(['imported', 'imported', 'imported', 'imported']);
    expect(result.outcomes[0]).toMatchObject({ created: 20 });
    expect((await pool.query('SELECT count(*)::int AS n FROM packs')).rows[0].n).toBe(packsBefore + 1);
    expect(result.perChange.reduce((n, c) => n + c.newBlocks, 0)).toBe(result.newBlocks);
    for (const r of v1) expect(await stored(r.did)).toEqual(expected(r));
    expect((await pool.query(`SELECT value FROM job_state WHERE key = 'test/cursor'`)).rows[0].value).toEqual({ seq: 1 });
    expect(await refcountProblems(pool)).toEqual([]);
  });

  it("applies commits; a replay is skipped and a gap is reported, without failing the others", async () => {
    const eventsBefore = Number((await pool.query('SELECT max(id) AS m FROM events')).rows[0].m);
    const packsBefore = packCount();
    const changes: RepoChange[] = [
      commitBetween(v1[0]!, v2[0]!),
      commitBetween(v1[1]!, v2[1]!, rev(0)), // since is not the stored rev: a gap
      { ...commitBetween(v1[2]!, v2[2]!), rev: v1[2]!.rev }, // at the stored rev: a replay
      commitBetween(v1[3]!, v2[3]!),
    ];
    const result = await storeBatch({ pool, blobs }, changes, { ...opts, cursor: { key: 'test/cursor', value: { seq: 2 } } });
    expect(result.outcomes.map((o) => o.kind)).toEqual(['imported', 'gap', 'skipped', 'imported']);
    expect(result.outcomes[0]).toMatchObject({ created: 3, updated: 2, deleted: 2 });
    expect(packCount()).toBe(packsBefore + 1);
    expect(await stored(v2[0]!.did)).toEqual(expected(v2[0]!));
    expect(await stored(v2[3]!.did)).toEqual(expected(v2[3]!));
    expect(await stored(v1[1]!.did)).toEqual(expected(v1[1]!));
    expect(await stored(v1[2]!.did)).toEqual(expected(v1[2]!));
    const { rows } = await pool.query(`SELECT did, kind, origin FROM events WHERE id > $1`, [eventsBefore]);
    expect(rows.filter((r) => r.did === v2[0]!.did)).toHaveLength(7);
    expect(rows.every((r) => r.origin === 'live' && (r.did === v2[0]!.did || r.did === v2[3]!.did))).toBe(true);
    const repo = await pool.query('SELECT rev, data_cid, records_count FROM repos WHERE did = $1', [v2[0]!.did]);
    expect(repo.rows[0]).toEqual({ rev: v2[0]!.rev, data_cid: cidBytes(v2[0]!.dataCid), records_count: String(v2[0]!.records.length) });
    const counts = await pool.query('SELECT sum(count)::int AS n FROM collection_counts WHERE did = $1', [v2[0]!.did]);
    expect(counts.rows[0].n).toBe(v2[0]!.records.length);
    expect(await refcountProblems(pool)).toEqual([]);
  });

  it('is idempotent: the same batch again changes nothing', async () => {
    const eventsBefore = Number((await pool.query('SELECT max(id) AS m FROM events')).rows[0].m);
    const result = await storeBatch({ pool, blobs }, [commitBetween(v1[0]!, v2[0]!), commitBetween(v1[3]!, v2[3]!)], opts);
    expect(result.outcomes.map((o) => o.kind)).toEqual(['skipped', 'skipped']);
    expect(result.newBlocks).toBe(0);
    expect(Number((await pool.query('SELECT max(id) AS m FROM events')).rows[0].m)).toBe(eventsBefore);
    expect(await refcountProblems(pool)).toEqual([]);
  });

  it('refuses a commit whose prevData is not the stored data root, and one whose ops disagree with the index', async () => {
    const wrongPrev = { ...commitBetween(v1[1]!, v2[1]!), prevData: v2[1]!.dataCid };
    const c = commitBetween(v1[2]!, v2[2]!);
    const wrongOp = { ...c, ops: c.ops.map((op) => (op.action === 'update' ? { ...op, prev: v2[2]!.records[0]!.cid } : op)) };
    const ok = await storeBatch({ pool, blobs }, [wrongPrev, wrongOp], opts);
    expect(ok.outcomes).toMatchObject([{ kind: 'gap', reason: expect.stringContaining('prevData') }, { kind: 'gap', reason: expect.stringContaining('disagrees') }]);
    expect(await stored(v1[1]!.did)).toEqual(expected(v1[1]!));
    expect(await refcountProblems(pool)).toEqual([]);
  });

  it('orders one repo\'s changes: a commit, then a deactivation, then an identity change, in one batch', async () => {
    const did = v1[1]!.did;
    const r = await storeBatch({ pool, blobs }, [
      commitBetween(v1[1]!, v2[1]!),
      { kind: 'account', did, active: false, status: 'takendown' },
      { kind: 'identity', did, handle: 'new.test', pds: undefined, signingKey: undefined },
      { kind: 'account', did: v1[2]!.did, active: false, status: 'deleted' },
    ], opts);
    expect(r.outcomes.map((o) => o.kind)).toEqual(['imported', 'account', 'identity', 'account']);
    const row = (await pool.query('SELECT status, gone_status, handle, rev FROM repos WHERE did = $1', [did])).rows[0];
    expect(row).toEqual({ status: 'gone', gone_status: 'takendown', handle: 'new.test', rev: v2[1]!.rev });
    expect(await stored(did)).toEqual(expected(v2[1]!));
    expect(await stored(v1[2]!.did)).toEqual([]);
    expect((await pool.query('SELECT status FROM repos WHERE did = $1', [v1[2]!.did])).rows[0].status).toBe('deleted');
    expect(await refcountProblems(pool)).toEqual([]);
  });
});

describe('storeBatch, snapshots', () => {
  it('stores a snapshot and a commit on top of it, of one repo, in one batch, in order', async () => {
    const did = didN(20);
    const a = await verified(did, generateRecords(8), 1);
    const b = await verified(did, [...generateRecords(8).slice(3), ...generateRecords(11).slice(8)], 2);
    const r = await storeBatch({ pool, blobs }, [snapshot(a), commitBetween(a, b)], { ...opts, origin: 'backfill' });
    expect(r.outcomes).toMatchObject([{ kind: 'imported', created: 8 }, { kind: 'imported', created: 3, deleted: 3 }]);
    expect(await stored(did)).toEqual(expected(b));
    const counts = await pool.query('SELECT sum(count)::int AS n FROM collection_counts WHERE did = $1', [did]);
    expect(counts.rows[0].n).toBe(b.records.length);
    expect(await refcountProblems(pool)).toEqual([]);
  });

  it('counts every row and event that names a block records share, through creates, updates and deletes', async () => {
    const did = didN(21);
    const same = { $type: 'app.bsky.feed.post', text: 'same', createdAt: '2026-01-01T00:00:00.000Z' };
    const recs = (n: number, text: string) => Array.from({ length: n }, (_, i) => ({ collection: 'app.bsky.feed.post', rkey: `3kaaaaaaaaa${String(i).padStart(2, '2')}`, value: { ...same, text } }));
    const a = await verified(did, [...recs(4, 'same'), ...generateRecords(3)], 1);
    const first = await storeBatch({ pool, blobs }, [snapshot(a)], { ...opts, origin: 'backfill' });
    expect(first.outcomes[0]).toMatchObject({ kind: 'imported', created: 7 });
    const shared = (await pool.query(`SELECT DISTINCT cid FROM records WHERE did = $1 AND rkey LIKE '3kaaaaaaaaa%'`, [did])).rows;
    expect(shared).toHaveLength(1);
    // Four rows and four create events name the one block.
    expect((await pool.query('SELECT refcount::int AS n FROM blocks WHERE cid = $1', [shared[0].cid])).rows[0].n).toBe(8);
    expect(await refcountProblems(pool)).toEqual([]);
    // Two of the four change to another shared value and one goes: rows move, events add up.
    const b = await verified(did, [...recs(2, 'same'), ...recs(3, 'other').slice(2), ...generateRecords(3)], 2);
    const second = await storeBatch({ pool, blobs }, [snapshot(b)], { ...opts, origin: 'backfill' });
    expect(second.outcomes[0]).toMatchObject({ kind: 'imported', created: 0, updated: 1, deleted: 1, unchanged: 5 });
    expect(await stored(did)).toEqual(expected(b));
    expect(await refcountProblems(pool)).toEqual([]);
  });
});

describe('storeBatch, collection counts under commits', () => {
  it('moves each collection\'s count: one grows, one shrinks, one empties and goes, one is new', async () => {
    const did = didN(22);
    const recs = (collection: string, n: number, from = 0) =>
      Array.from({ length: n }, (_, i) => ({ collection, rkey: `3kcount${String(from + i).padStart(6, '2')}`, value: { $type: collection, text: `${collection} ${from + i}`, createdAt: '2026-01-01T00:00:00.000Z' } }));
    const a = await verified(did, [...recs('app.bsky.feed.post', 3), ...recs('app.bsky.feed.like', 4), ...recs('app.bsky.graph.block', 2)], 1);
    await storeBatch({ pool, blobs }, [snapshot(a)], { ...opts, origin: 'backfill' });
    const b = await verified(did, [...recs('app.bsky.feed.post', 5), ...recs('app.bsky.feed.like', 1), ...recs('app.bsky.graph.follow', 2)], 2);
    const c = await verified(did, [...recs('app.bsky.feed.post', 6), ...recs('app.bsky.graph.follow', 2)], 3);
    // Two commits of the repo in one batch, then a third batch of one.
    const r = await storeBatch({ pool, blobs }, [commitBetween(a, b), commitBetween(b, c)], opts);
    expect(r.outcomes.map((o) => o.kind)).toEqual(['imported', 'imported']);
    const counts = async () => (await pool.query('SELECT collection, count::int AS n FROM collection_counts WHERE did = $1 ORDER BY collection', [did])).rows;
    const recounted = async () =>
      (await pool.query('SELECT collection, count(*)::int AS n FROM records WHERE did = $1 GROUP BY collection ORDER BY collection', [did])).rows;
    expect(await counts()).toEqual([{ collection: 'app.bsky.feed.post', n: 6 }, { collection: 'app.bsky.graph.follow', n: 2 }]);
    expect(await counts()).toEqual(await recounted());
    const d = await verified(did, [...recs('app.bsky.feed.post', 5), ...recs('app.bsky.graph.follow', 3), ...recs('app.bsky.feed.like', 1, 50)], 4);
    await storeBatch({ pool, blobs }, [commitBetween(c, d)], opts);
    expect(await counts()).toEqual([{ collection: 'app.bsky.feed.like', n: 1 }, { collection: 'app.bsky.feed.post', n: 5 }, { collection: 'app.bsky.graph.follow', n: 3 }]);
    expect(await counts()).toEqual(await recounted());
    expect(await refcountProblems(pool)).toEqual([]);
  });
});

describe('storeBatch, collection counts under snapshots', () => {
  it('re-imports of several repos in one batch each keep exactly their own collections', async () => {
    const [x, y] = [didN(23), didN(24)];
    const recs = (did: string, collection: string, n: number) =>
      Array.from({ length: n }, (_, i) => ({ collection, rkey: `3ksnap${String(i).padStart(7, '2')}`, value: { $type: collection, text: `${did} ${i}`, createdAt: '2026-01-01T00:00:00.000Z' } }));
    const xa = await verified(x, [...recs(x, 'app.bsky.feed.post', 2), ...recs(x, 'app.bsky.feed.like', 3)], 1);
    const ya = await verified(y, recs(y, 'app.bsky.feed.post', 4), 1);
    await storeBatch({ pool, blobs }, [snapshot(xa), snapshot(ya)], { ...opts, origin: 'backfill' });
    // x loses its likes while y gains some: a collection one repo of the batch still has must go
    // from the other.
    const xb = await verified(x, recs(x, 'app.bsky.feed.post', 3), 2);
    const yb = await verified(y, [...recs(y, 'app.bsky.feed.post', 4), ...recs(y, 'app.bsky.feed.like', 1)], 2);
    const r = await storeBatch({ pool, blobs }, [snapshot(xb), snapshot(yb)], { ...opts, origin: 'backfill' });
    expect(r.outcomes.map((o) => o.kind)).toEqual(['imported', 'imported']);
    const counts = async () => (await pool.query('SELECT did, collection, count::int AS n FROM collection_counts WHERE did = ANY($1) ORDER BY did, collection', [[x, y]])).rows;
    expect(await counts()).toEqual([
      { did: x, collection: 'app.bsky.feed.post', n: 3 },
      { did: y, collection: 'app.bsky.feed.like', n: 1 },
      { did: y, collection: 'app.bsky.feed.post', n: 4 },
    ]);
    expect(await refcountProblems(pool)).toEqual([]);
  });
});

describe('StoreBatcher', () => {
  it('stores what concurrent callers submit together in one batch, each answered with its own outcome', async () => {
    const repos: VerifiedRepo[] = [];
    for (let i = 0; i < 5; i++) repos.push(await verified(didN(10 + i), generateRecords(6).map((r) => ({ ...r, value: { ...r.value, batcher: i } })), 1));
    const batcher = new StoreBatcher({ pool, blobs }, { filter: FULL, origin: 'backfill' });
    const packsBefore = (await pool.query('SELECT count(*)::int AS n FROM packs')).rows[0].n;
    // The second submission of repos[0] is a replay of the first, decided after it in the same batch.
    const answers = await Promise.all([...repos, repos[0]!].map((r) => batcher.submit(snapshot(r))));
    expect(answers.map((a) => a.outcome.kind)).toEqual(['imported', 'imported', 'imported', 'imported', 'imported', 'skipped']);
    expect(new Set(answers.map((a) => a.packKey)).size).toBe(1);
    expect((await pool.query('SELECT count(*)::int AS n FROM packs')).rows[0].n).toBe(packsBefore + 1);
    expect(answers[5]!.newBlocks).toBe(0);
    for (const r of repos) expect(await stored(r.did)).toEqual(expected(r));
    expect(await refcountProblems(pool)).toEqual([]);
  });

  it('room() holds a producer back while a full batch waits behind the one in flight', async () => {
    const repos: VerifiedRepo[] = [];
    for (let i = 0; i < 5; i++) repos.push(await verified(didN(25 + i), generateRecords(3).map((r) => ({ ...r, value: { ...r.value, room: i } })), 1));
    const batcher = new StoreBatcher({ pool, blobs }, { filter: FULL, origin: 'backfill' }, { maxChanges: 2, maxBlocks: 50_000 });
    await batcher.room(); // empty: at once
    const answers = repos.slice(0, 4).map((r) => batcher.submit(snapshot(r)));
    let roomy = false;
    const room = batcher.room().then(() => (roomy = true));
    // Four queued, batches of two: the first batch is taken once the grace macrotask has passed,
    // and two still wait behind it, a full batch; the producer waits until that one is taken too.
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(roomy).toBe(false);
    await room;
    answers.push(batcher.submit(snapshot(repos[4]!)));
    const done = await Promise.all(answers);
    expect(done.map((a) => a.outcome.kind)).toEqual(['imported', 'imported', 'imported', 'imported', 'imported']);
    // At most two repos per batch: at least three packs for five repos.
    expect(new Set(done.map((a) => a.packKey)).size).toBeGreaterThanOrEqual(3);
    for (const r of repos) expect(await stored(r.did)).toEqual(expected(r));
  });

  it('with gatherMs, a batch that is not full waits for more changes; endOfInput() stores it at once', async () => {
    const repos: VerifiedRepo[] = [];
    for (let i = 0; i < 3; i++) repos.push(await verified(didN(5 + i), generateRecords(3).map((r) => ({ ...r, value: { ...r.value, gather: i } })), 1));
    const batcher = new StoreBatcher({ pool, blobs }, { filter: FULL, origin: 'backfill' }, { maxChanges: 10, maxBlocks: 50_000, gatherMs: 60_000 });
    const started = performance.now();
    const first = batcher.submit(snapshot(repos[0]!));
    // Without the gathering wait, the first would be stored alone long before the others come.
    await new Promise((r) => setTimeout(r, 200));
    const rest = repos.slice(1).map((r) => batcher.submit(snapshot(r)));
    batcher.endOfInput();
    const done = await Promise.all([first, ...rest]);
    expect(performance.now() - started).toBeLessThan(30_000);
    expect(done.map((a) => a.outcome.kind)).toEqual(['imported', 'imported', 'imported']);
    expect(new Set(done.map((a) => a.packKey)).size).toBe(1);
    for (const r of repos) expect(await stored(r.did)).toEqual(expected(r));
  });

  it('with gatherMs, a full batch is stored without waiting', async () => {
    const repos: VerifiedRepo[] = [];
    for (let i = 0; i < 2; i++) repos.push(await verified(didN(8 + i), generateRecords(3).map((r) => ({ ...r, value: { ...r.value, full: i } })), 1));
    const batcher = new StoreBatcher({ pool, blobs }, { filter: FULL, origin: 'backfill' }, { maxChanges: 2, maxBlocks: 50_000, gatherMs: 60_000 });
    const started = performance.now();
    const done = await Promise.all(repos.map((r) => batcher.submit(snapshot(r))));
    expect(performance.now() - started).toBeLessThan(30_000);
    expect(new Set(done.map((a) => a.packKey)).size).toBe(1);
  });

  it('room() also holds a producer back while a batch worth of blocks waits', async () => {
    const repos: VerifiedRepo[] = [];
    for (let i = 0; i < 3; i++) repos.push(await verified(didN(15 + i), generateRecords(4).map((r) => ({ ...r, value: { ...r.value, blocks: i } })), 1));
    // Each repo carries more than 4 blocks (its commit, MST nodes and records): one is a batch.
    const batcher = new StoreBatcher({ pool, blobs }, { filter: FULL, origin: 'backfill' }, { maxChanges: 100, maxBlocks: 4 });
    const answers = repos.map((r) => batcher.submit(snapshot(r)));
    let roomy = false;
    const room = batcher.room().then(() => (roomy = true));
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(roomy).toBe(false);
    await room;
    const done = await Promise.all(answers);
    expect(new Set(done.map((a) => a.packKey)).size).toBe(3);
    for (const r of repos) expect(await stored(r.did)).toEqual(expected(r));
  });
});

describe('storeBatch, concurrent batches', () => {
  // DIDs no other test of this file stores.
  const conc = (i: number) => `did:plc:concurrent${'x'.repeat(13)}${'abcdefgh'[i]}`;

  it('a batch that shares repos with one in flight waits for it and applies on top of what it stored, new repos too', async () => {
    // Two repos stored before, two new: the first batch makes and locks all four rows.
    const dids = [0, 1, 2, 3].map(conc);
    const gen = (did: string, n: number, r: number) => verified(did, generateRecords(n).map((x) => ({ ...x, value: { ...x.value, did } })), r);
    const v = await Promise.all(dids.map(async (d) => [await gen(d, 3, 1), await gen(d, 5, 2), await gen(d, 7, 3)]));
    const first = await storeBatch({ pool, blobs }, [snapshot(v[0]![0]!), snapshot(v[1]![0]!)], { ...opts, origin: 'backfill' });
    expect(first.outcomes.map((o) => o.kind)).toEqual(['imported', 'imported']);

    let entered!: () => void;
    const inside = new Promise<void>((r) => (entered = r));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    // A: commits on the stored repos, snapshots of the new ones; held open before COMMIT.
    const a = storeBatch({ pool, blobs }, [commitBetween(v[0]![0]!, v[0]![1]!), commitBetween(v[1]![0]!, v[1]![1]!), snapshot(v[2]![1]!), snapshot(v[3]![1]!)], {
      ...opts,
      alsoInTransaction: async () => {
        entered();
        await gate;
      },
    });
    await inside;
    // Then the next commit of each, the stored repos in one batch and the new ones in another,
    // each listed in the other order. Stored before A committed, each would be a gap (its since
    // is A's rev), and a new repo's row would not be there to lock.
    const next = (is: number[]) => storeBatch({ pool, blobs }, is.map((i) => commitBetween(v[i]![1]!, v[i]![2]!)), opts);
    const b = next([1, 0]);
    const c = next([3, 2]);
    const waiting = async () => (await pool.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`)).rows[0].n;
    for (let t = 0; (await waiting()) < 2; t++) {
      if (t > 200) throw new Error('the later batches never waited for the first');
      await new Promise((r) => setTimeout(r, 25));
    }
    release();
    const [ra, rb, rc] = await Promise.all([a, b, c]);
    expect(ra.outcomes.map((o) => o.kind)).toEqual(['imported', 'imported', 'imported', 'imported']);
    expect(rb.outcomes.map((o) => o.kind)).toEqual(['imported', 'imported']);
    expect(rc.outcomes.map((o) => o.kind)).toEqual(['imported', 'imported']);
    for (const r of v) expect(await stored(r[2]!.did)).toEqual(expected(r[2]!));
    const revs = (await pool.query('SELECT did, rev FROM repos WHERE did = ANY($1) ORDER BY did', [dids])).rows;
    expect(revs).toEqual(v.map((r) => ({ did: r[2]!.did, rev: r[2]!.rev })).sort((x, y) => (x.did < y.did ? -1 : 1)));
    expect(await refcountProblems(pool)).toEqual([]);
  });

  it('reads a repo row only once it holds its lock: what a writer holding it stores is kept', async () => {
    const did = conc(7);
    const v1 = await verified(did, generateRecords(3), 1);
    const v2 = await verified(did, generateRecords(5), 2);
    await storeBatch({ pool, blobs }, [snapshot(v1)], { ...opts, origin: 'backfill' });
    const other = await pool.connect();
    try {
      await other.query('BEGIN');
      await other.query('SELECT 1 FROM repos WHERE did = $1 FOR UPDATE', [did]);
      const b = storeBatch({ pool, blobs }, [commitBetween(v1, v2)], opts);
      for (let t = 0; (await pool.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`)).rows[0].n === 0; t++) {
        if (t > 200) throw new Error('the batch never waited for the row lock');
        await new Promise((r) => setTimeout(r, 25));
      }
      await other.query(`UPDATE repos SET handle = 'held.test' WHERE did = $1`, [did]);
      await other.query('COMMIT');
      expect((await b).outcomes.map((o) => o.kind)).toEqual(['imported']);
    } finally {
      other.release();
    }
    expect((await pool.query('SELECT handle, rev FROM repos WHERE did = $1', [did])).rows[0]).toEqual({ handle: 'held.test', rev: v2.rev });
  });

  it('concurrent batches over the same repos in any order all land', async () => {
    const dids = [4, 5, 6].map(conc);
    const shuffled = (xs: string[], k: number) => xs.map((_, i) => xs[(i + k) % xs.length]!);
    // Account changes of repos some batches make and others find: each batch locks all of them.
    const batches = Array.from({ length: 8 }, (_, k) =>
      storeBatch({ pool, blobs }, shuffled(dids, k).map((did) => ({ kind: 'identity' as const, did, handle: `h${k}.test`, pds: undefined, signingKey: undefined })), opts),
    );
    const results = await Promise.all(batches);
    for (const r of results) expect(r.outcomes.map((o) => o.kind)).toEqual(['identity', 'identity', 'identity']);
    const handles = (await pool.query('SELECT DISTINCT handle FROM repos WHERE did = ANY($1)', [dids])).rows;
    // The last batch to commit wrote all three rows: one handle.
    expect(handles).toHaveLength(1);
  });
});

describe('storeBatch, blocks and repos a concurrent batch stores meanwhile', () => {
  const shared = (i: number) => `did:plc:sharedblocks${'x'.repeat(11)}${'abcdefgh'[i]}`;
  const lockWaiters = async () =>
    (await pool.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`)).rows[0].n as number;
  /** Runs `first` held open just before its COMMIT until `second` waits for a lock, then lets it commit. */
  async function overlapped<T>(first: (hold: () => Promise<void>) => Promise<T>, second: () => Promise<T>): Promise<[T, T]> {
    let entered!: () => void;
    const inside = new Promise<void>((r) => (entered = r));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const a = first(async () => {
      entered();
      await gate;
    });
    await inside;
    const b = second();
    for (let t = 0; (await lockWaiters()) === 0; t++) {
      if (t > 200) throw new Error('the second batch never waited for the first');
      await new Promise((r) => setTimeout(r, 25));
    }
    release();
    return Promise.all([a, b]);
  }
  const made = async (did: string, records: RecordInput[], r: number) => {
    const m = await makeRepo({ did, records, keypair, rev: rev(r) });
    return { car: m.car, repo: await verifyRepo(m.car, { did, signingKey: m.signingKey }) };
  };
  const refcountOf = async (cid: string) => Number((await pool.query('SELECT refcount FROM blocks WHERE cid = $1', [cidBytes(cid)])).rows[0]?.refcount);

  it('a batch whose blocks another batch indexed after its check is retried: exact refcounts, every block readable, GC keeps them', async () => {
    // Two repos with the same records under the same paths: the same record blocks and MST nodes,
    // only the commits differ. The second batch checks the index while the first has indexed
    // them and not committed, so its COPY of them waits, then fails on the key.
    // Marked: no other test stores these blocks.
    const records = generateRecords(12).map((r) => ({ ...r, value: { ...r.value, pair: 'p and q' } }));
    const p = await made(shared(0), records, 1);
    const q = await made(shared(1), records, 1);
    const [ra, rb] = await overlapped(
      (hold) => storeBatch({ pool, blobs }, [snapshot(p.repo)], { ...opts, origin: 'backfill', alsoInTransaction: hold }),
      () => storeBatch({ pool, blobs }, [snapshot(q.repo)], { ...opts, origin: 'backfill' }),
    );
    expect(ra.outcomes.map((o) => o.kind)).toEqual(['imported']);
    expect(rb.outcomes).toMatchObject([{ kind: 'imported', created: 12 }]);
    // The retry found the shared blocks indexed: its pack holds its commit alone.
    expect(rb.newBlocks).toBe(1);
    // Each record block: two rows and two events.
    for (const r of q.repo.records) expect(await refcountOf(r.cid)).toBe(4);
    expect(await refcountProblems(pool)).toEqual([]);
    expect(await unreadableBlocks(pool, blobs, [p.car, q.car])).toEqual([]);

    const report = await collectGarbage({ pool, blobs }, { graceSeconds: 0, repackBelow: 0 });
    expect(report.mark.complete).toBe(true);
    expect(await unreadableBlocks(pool, blobs, [p.car, q.car])).toEqual([]);
    expect(await refcountProblems(pool)).toEqual([]);
    for (const did of [p.repo.did, q.repo.did]) expect(await stored(did)).toEqual(expected(did === p.repo.did ? p.repo : q.repo));
  });

  it('a new repo another batch made after this one looked is retried on top of what that one stored', async () => {
    const did = shared(2);
    const base = generateRecords(10).map((r) => ({ ...r, value: { ...r.value, did } }));
    const v1 = await made(did, base, 1);
    const v2 = await made(did, [...base.slice(3), ...generateRecords(14).slice(10).map((r) => ({ ...r, value: { ...r.value, did } }))], 2);
    // The second batch finds no row (the first has inserted it, uncommitted), decides the repo
    // as new, and waits on the first's rows; once that commits, its insert fails and the retry
    // decides against the stored state: 4 creates and 3 deletes, not 11 creates.
    const [ra, rb] = await overlapped(
      (hold) => storeBatch({ pool, blobs }, [snapshot(v1.repo)], { ...opts, origin: 'backfill', alsoInTransaction: hold }),
      () => storeBatch({ pool, blobs }, [snapshot(v2.repo)], { ...opts, origin: 'backfill' }),
    );
    expect(ra.outcomes).toMatchObject([{ kind: 'imported', created: 10 }]);
    expect(rb.outcomes).toMatchObject([{ kind: 'imported', created: 4, deleted: 3, updated: 0, unchanged: 7 }]);
    expect(await stored(did)).toEqual(expected(v2.repo));
    const row = (await pool.query('SELECT rev, status, records_count, last_imported_at IS NOT NULL AS imported FROM repos WHERE did = $1', [did])).rows[0];
    expect(row).toEqual({ rev: v2.repo.rev, status: 'active', records_count: '11', imported: true });
    const counts = (await pool.query('SELECT collection, count FROM collection_counts WHERE did = $1 ORDER BY collection', [did])).rows;
    const want = new Map<string, number>();
    for (const r of v2.repo.records) want.set(r.collection, (want.get(r.collection) ?? 0) + 1);
    expect(counts).toEqual([...want].sort(([a], [b]) => (a < b ? -1 : 1)).map(([collection, n]) => ({ collection, count: String(n) })));
    const events = (await pool.query(`SELECT kind, count(*)::int AS n FROM events WHERE did = $1 GROUP BY kind ORDER BY kind`, [did])).rows;
    expect(events).toEqual([{ kind: 'create', n: 14 }, { kind: 'delete', n: 3 }]);
    expect(await refcountProblems(pool)).toEqual([]);
    expect(await unreadableBlocks(pool, blobs, [v2.car])).toEqual([]);
  });

  it('an identity change to a repo another batch is making lands on the row that batch made, which keeps its state', async () => {
    const did = shared(5);
    const v = await made(did, generateRecords(4).map((r) => ({ ...r, value: { ...r.value, did } })), 1);
    // The identity batch finds no row and would make one; its insert waits for the snapshot's,
    // fails once that commits, and the retry changes the handle of the row the snapshot made.
    const [ra, rb] = await overlapped(
      (hold) => storeBatch({ pool, blobs }, [snapshot(v.repo)], { ...opts, origin: 'backfill', alsoInTransaction: hold }),
      () => storeBatch({ pool, blobs }, [{ kind: 'identity', did, handle: 'later.test', pds: undefined, signingKey: undefined }], opts),
    );
    expect(ra.outcomes.map((o) => o.kind)).toEqual(['imported']);
    expect(rb.outcomes.map((o) => o.kind)).toEqual(['identity']);
    const row = (await pool.query('SELECT status, rev, handle, records_count FROM repos WHERE did = $1', [did])).rows[0];
    expect(row).toEqual({ status: 'active', rev: v.repo.rev, handle: 'later.test', records_count: '4' });
    expect(await stored(did)).toEqual(expected(v.repo));
  });

  it("a batch of repos that have no row yet holds GC's lock and the event writers' lock shared until it commits", async () => {
    const v = await made(shared(6), generateRecords(2).map((r) => ({ ...r, value: { ...r.value, gc: true } })), 1);
    let held: unknown;
    await storeBatch({ pool, blobs }, [snapshot(v.repo)], {
      ...opts,
      alsoInTransaction: async (tx) => {
        held = (
          await tx.query(
            `SELECT ((classid::bigint << 32) | objid::bigint)::text AS key, mode, granted
             FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND pid = pg_backend_pid() ORDER BY 1`,
          )
        ).rows;
      },
    });
    // pg_locks shows a key as its two unsigned halves.
    const key = (k: bigint) => BigInt.asUintN(64, k).toString();
    const want = [key(GC_LOCK_KEY), key(EVENT_WRITER_LOCK_KEY)].sort().map((k) => ({ key: k, mode: 'ShareLock', granted: true }));
    expect(held).toEqual(want);
  });

  it('a new repo gets its row with its state in one insert; a repo the batch only names gets a new row', async () => {
    const did = shared(3);
    const unknown = shared(4);
    const v = await made(did, generateRecords(3).map((r) => ({ ...r, value: { ...r.value, did } })), 1);
    const r = await storeBatch({ pool, blobs }, [snapshot(v.repo), { kind: 'identity', did: unknown, handle: undefined, pds: undefined, signingKey: undefined }], opts);
    expect(r.outcomes.map((o) => o.kind)).toEqual(['imported', 'identity']);
    const rows = (await pool.query('SELECT did, status, rev, head_cid IS NOT NULL AS head, records_count FROM repos WHERE did = ANY($1) ORDER BY did', [[did, unknown]])).rows;
    expect(rows).toEqual([
      { did, status: 'active', rev: v.repo.rev, head: true, records_count: '3' },
      { did: unknown, status: 'pending', rev: null, head: false, records_count: '0' },
    ]);
  });
});

/** Runs `fn` while inserts of `did`'s rows into `table` fail ('injected failure in <table>'), through a trigger named `name`. */
async function failingInserts(table: string, did: string, name: string, fn: () => Promise<void>): Promise<void> {
  await pool.query(`CREATE FUNCTION ${name}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN IF NEW.did = '${did}' THEN RAISE EXCEPTION 'injected failure in ${table}'; END IF; RETURN NEW; END $$`);
  await pool.query(`CREATE TRIGGER ${name} BEFORE INSERT ON ${table} FOR EACH ROW EXECUTE FUNCTION ${name}()`);
  try {
    await fn();
  } finally {
    await pool.query(`DROP TRIGGER ${name} ON ${table}; DROP FUNCTION ${name}()`);
  }
}

describe('storeBatch, a failure writing rows', () => {
  const did = (table: string, i: number) => `did:plc:rowwriter${table.padEnd(14, 'x')}${'ab'[i]}`;
  const openTransactions = async () =>
    (await pool.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'`)).rows[0].n as number;

  // A failure in the rows the batch writes is the batch's failure, named as itself; nothing of
  // the batch is stored, and the connection goes back to the pool with no transaction open.
  it.each(['records', 'events'])('a failure writing %s fails the batch with its own error, stores nothing and leaves no transaction open', async (table) => {
    const dids = [did(table, 0), did(table, 1)];
    const repos: VerifiedRepo[] = [];
    for (const d of dids) repos.push(await verified(d, generateRecords(30).map((r) => ({ ...r, value: { ...r.value, d } })), 1));
    await failingInserts(table, dids[1]!, `test_fail_${table}`, async () => {
      await expect(storeBatch({ pool, blobs }, repos.map(snapshot), { ...opts, origin: 'backfill' })).rejects.toThrow(`injected failure in ${table}`);
    });
    for (const t of ['repos', 'records', 'events', 'collection_counts']) {
      expect((await pool.query(`SELECT count(*)::int AS n FROM ${t} WHERE did = ANY($1)`, [dids])).rows[0].n, t).toBe(0);
    }
    expect((await pool.query('SELECT count(*)::int AS n FROM blocks WHERE cid = ANY($1)', [repos.map((r) => cidBytes(r.commitCid))])).rows[0].n).toBe(0);
    expect(await openTransactions()).toBe(0);

    const again = await storeBatch({ pool, blobs }, repos.map(snapshot), { ...opts, origin: 'backfill' });
    expect(again.outcomes).toMatchObject([{ kind: 'imported', created: 30 }, { kind: 'imported', created: 30 }]);
    for (const r of repos) expect(await stored(r.did)).toEqual(expected(r));
    expect(await refcountProblems(pool)).toEqual([]);
  });
});

describe('storeBatch, a large batch writing its rows beside the block index', () => {
  // `overlapRows: 0` makes every batch take the path a large repo's first import takes (past
  // 20,000 rows): its records and events are written on the transaction's connection while the
  // block index is checked on a second one and the pack is laid out.
  const big = { ...opts, origin: 'backfill' as const, overlapRows: 0 };
  const didO = (i: number) => `did:plc:overlapwrites${'x'.repeat(9)}${'abcdefgh'[i]}`;
  const steps = () => {
    const seen: string[] = [];
    return { seen, trace: (s: string) => void seen.push(s) };
  };
  const eventKinds = async (did: string) =>
    (await pool.query<{ kind: string; n: number }>(`SELECT kind, count(*)::int AS n FROM events WHERE did = $1 GROUP BY kind ORDER BY kind`, [did])).rows.map((r) => `${r.kind} ${r.n}`);
  const inUse = (p: pg.Pool) => p.totalCount - p.idleCount;

  it('stores the same rows, events and refcounts, first imports and re-imports with updates and deletes', async () => {
    const base = generateRecords(25);
    const edited = [...base.slice(3).map((r, i) => (i < 4 ? { ...r, value: { ...r.value, text: `edited ${i}` } } : r)), ...generateRecords(30).slice(25)];
    const v1 = [];
    const v2 = [];
    for (let i = 0; i < 3; i++) {
      v1.push(await verified(didO(i), base.map((r) => ({ ...r, value: { ...r.value, o: i } })), 1));
      v2.push(await verified(didO(i), edited.map((r) => ({ ...r, value: { ...r.value, o: i } })), 2));
    }
    const first = steps();
    const a = await storeBatch({ pool, blobs }, v1.map(snapshot), { ...big, trace: first.trace });
    expect(a.outcomes).toMatchObject(v1.map(() => ({ kind: 'imported', created: 25 })));
    // The rows were written before the block index, not after it.
    expect(first.seen).toContain('await records, counts, events');
    expect(first.seen).not.toContain('records, counts');
    expect(first.seen.indexOf('await records, counts, events')).toBeLessThan(first.seen.indexOf('index blocks, refcounts'));
    for (const r of v1) expect(await stored(r.did)).toEqual(expected(r));
    expect(await refcountProblems(pool)).toEqual([]);

    const b = await storeBatch({ pool, blobs }, v2.map(snapshot), big);
    expect(b.outcomes).toMatchObject(v2.map(() => ({ kind: 'imported', created: 5, updated: 4, deleted: 3 })));
    for (const r of v2) {
      expect(await stored(r.did)).toEqual(expected(r));
      expect(await eventKinds(r.did)).toEqual(['create 30', 'delete 3', 'update 4']);
      const counts = await pool.query('SELECT sum(count)::int AS n FROM collection_counts WHERE did = $1', [r.did]);
      expect(counts.rows[0].n).toBe(r.records.length);
    }
    expect(await refcountProblems(pool)).toEqual([]);
    expect(inUse(pool)).toBe(0);
  });

  it('stores commits (the live-sync shape) and an ephemeral snapshot the same way', async () => {
    const didC = (c: string) => `did:plc:overlapcommits${'x'.repeat(9)}${c}`;
    const base = generateRecords(16);
    const edited = [...base.slice(2).map((r, i) => (i < 3 ? { ...r, value: { ...r.value, text: `changed ${i}` } } : r)), ...generateRecords(19).slice(16)];
    const from: VerifiedRepo[] = [];
    const to: VerifiedRepo[] = [];
    for (const c of ['a', 'b']) {
      from.push(await verified(didC(c), base.map((r) => ({ ...r, value: { ...r.value, c } })), 1));
      to.push(await verified(didC(c), edited.map((r) => ({ ...r, value: { ...r.value, c } })), 2));
    }
    await storeBatch({ pool, blobs }, from.map(snapshot), { ...opts, origin: 'backfill' });
    const s = steps();
    const applied = await storeBatch({ pool, blobs }, from.map((f, i) => commitBetween(f, to[i]!)), { ...opts, overlapRows: 0, trace: s.trace });
    expect(applied.outcomes).toMatchObject(to.map(() => ({ kind: 'imported', created: 3, updated: 3, deleted: 2 })));
    expect(s.seen).toContain('await records, counts, events');
    for (const r of to) {
      expect(await stored(r.did)).toEqual(expected(r));
      expect(await eventKinds(r.did)).toEqual(['create 19', 'delete 2', 'update 3']);
    }
    expect(await refcountProblems(pool)).toEqual([]);

    // Ephemeral: events only, each with its expiry, and no record rows.
    const eph = await verified(didC('c'), generateRecords(9).map((r) => ({ ...r, value: { ...r.value, eph: true } })), 1);
    const e = steps();
    const r = await storeBatch({ pool, blobs }, [snapshot(eph)], { ...big, ephemeralRetentionSeconds: 3600, trace: e.trace });
    expect(r.outcomes).toMatchObject([{ kind: 'imported', created: 9 }]);
    expect(e.seen).toContain('await records, counts, events');
    expect(await stored(eph.did)).toEqual([]);
    const ev = await pool.query<{ n: number; expiring: number }>(`SELECT count(*)::int AS n, count(expires_at)::int AS expiring FROM events WHERE did = $1`, [eph.did]);
    expect(ev.rows[0]).toEqual({ n: 9, expiring: 9 });
    expect(await refcountProblems(pool)).toEqual([]);
    expect(inUse(pool)).toBe(0);
  });

  it('with no connection to spare, writes them after the block index on its one connection', async () => {
    const one = await connectPool(await freshDatabase('ingest_one'), { max: 1 });
    try {
      await migrate(one);
      const repo = await verified(didO(3), generateRecords(12), 1);
      const s = steps();
      const r = await storeBatch({ pool: one, blobs }, [snapshot(repo)], { ...big, trace: s.trace });
      expect(r.outcomes).toMatchObject([{ kind: 'imported', created: 12 }]);
      expect(s.seen).not.toContain('await records, counts, events');
      expect(s.seen.indexOf('records, counts')).toBeGreaterThan(s.seen.indexOf('index blocks, refcounts'));
      expect(await refcountProblems(one)).toEqual([]);
    } finally {
      await one.end();
    }
  });

  it.each(['records', 'events'])('a failure writing %s fails the batch with its own error, stores nothing, leaves no transaction open and no connection out', async (table) => {
    const dids = [didO(4), didO(5)].map((d) => d.replace('overlapwrites', `ovfail${table.slice(0, 3)}`).slice(0, 32));
    const repos: VerifiedRepo[] = [];
    for (const d of dids) repos.push(await verified(d, generateRecords(15).map((r) => ({ ...r, value: { ...r.value, d } })), 1));
    await failingInserts(table, dids[1]!, `test_ovfail_${table}`, async () => {
      const s = steps();
      await expect(storeBatch({ pool, blobs }, repos.map(snapshot), { ...big, trace: s.trace })).rejects.toThrow(`injected failure in ${table}`);
      // It failed where the rows are awaited, after the check on the other connection.
      expect(s.seen).toContain('check indexed blocks');
      expect(s.seen).not.toContain('index blocks, refcounts');
    });
    for (const t of ['repos', 'records', 'events', 'collection_counts']) {
      expect((await pool.query(`SELECT count(*)::int AS n FROM ${t} WHERE did = ANY($1)`, [dids])).rows[0].n, t).toBe(0);
    }
    expect((await pool.query('SELECT count(*)::int AS n FROM blocks WHERE cid = ANY($1)', [repos.map((r) => cidBytes(r.commitCid))])).rows[0].n).toBe(0);
    expect((await pool.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'`)).rows[0].n).toBe(0);
    expect(inUse(pool)).toBe(0);

    const again = await storeBatch({ pool, blobs }, repos.map(snapshot), big);
    expect(again.outcomes).toMatchObject([{ kind: 'imported', created: 15 }, { kind: 'imported', created: 15 }]);
    for (const r of repos) expect(await stored(r.did)).toEqual(expected(r));
    expect(await refcountProblems(pool)).toEqual([]);
  });

  it('a batch whose blocks another batch indexed after its check (on the other connection) is retried: exact refcounts, every block readable', async () => {
    // As in the concurrent batches' test above: two repos with the same records under the same
    // paths, the second checking the index while the first holds its blocks uncommitted.
    const records = generateRecords(14).map((r) => ({ ...r, value: { ...r.value, pair: 'r and s, overlapped' } }));
    const made = async (did: string) => {
      const m = await makeRepo({ did, records, keypair, rev: rev(1) });
      return { car: m.car, repo: await verifyRepo(m.car, { did, signingKey: m.signingKey }) };
    };
    const r = await made(didO(6));
    const s = await made(didO(7));
    let entered!: () => void;
    const inside = new Promise<void>((ok) => (entered = ok));
    let release!: () => void;
    const gate = new Promise<void>((ok) => (release = ok));
    const first = storeBatch({ pool, blobs }, [snapshot(r.repo)], {
      ...big,
      alsoInTransaction: async () => {
        entered();
        await gate;
      },
    });
    await inside;
    const tries = steps();
    const second = storeBatch({ pool, blobs }, [snapshot(s.repo)], { ...big, trace: tries.trace });
    for (let t = 0; ; t++) {
      const waiting = (await pool.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`)).rows[0].n;
      if (waiting > 0) break;
      if (t > 200) throw new Error('the second batch never waited for the first');
      await new Promise((ok) => setTimeout(ok, 25));
    }
    release();
    const [ra, rb] = await Promise.all([first, second]);
    expect(ra.outcomes.map((o) => o.kind)).toEqual(['imported']);
    expect(rb.outcomes).toMatchObject([{ kind: 'imported', created: 14 }]);
    // Two attempts, both overlapped; the second found the shared blocks indexed.
    expect(tries.seen.filter((x) => x === 'await records, counts, events')).toHaveLength(2);
    expect(rb.newBlocks).toBe(1);
    for (const rec of s.repo.records) expect(Number((await pool.query('SELECT refcount FROM blocks WHERE cid = $1', [cidBytes(rec.cid)])).rows[0].refcount)).toBe(4);
    expect(await refcountProblems(pool)).toEqual([]);
    expect(await unreadableBlocks(pool, blobs, [r.car, s.car])).toEqual([]);
    for (const x of [r, s]) expect(await stored(x.repo.did)).toEqual(expected(x.repo));
    expect(inUse(pool)).toBe(0);
  });
});
