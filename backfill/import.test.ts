/**
 * The importer on real stores: PostgreSQL from the test stack, a directory blobstore, and real
 * signed repos made by the reference implementation.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import * as TID from '@atcute/tid';
import { freshDatabase } from '../test/stack.ts';
import { refcountProblems } from '../test/helpers.ts';
import { connectPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import type { ByteSource } from '../storage/blobstore/types.ts';
import { locateBlock, readBlock } from '../storage/packs.ts';
import { verifyRepo } from '../atproto/verify.ts';
import { generateRecords, makeRepo, newKeypair, type RecordInput, type TestKeypair } from '../atproto/testing/make-repo.ts';
import { importRepo, dropRepo, type ImportResult } from './import.ts';
import { BlockHashMismatchError } from '../atproto/errors.ts';
import { flipByte } from '../atproto/testing/car-edit.ts';
import { cidBytes } from '../atproto/cid.ts';
import { FilterOptions } from './filters.ts';
import { markGone } from './repo-state.ts';
import { GC_LOCK_KEY } from '../storage/db/locks.ts';

let pool: pg.Pool;
let blobs: LocalBlobStore;
const FULL = FilterOptions.parse({});

beforeAll(async () => {
  pool = await connectPool(await freshDatabase('import'));
  await migrate(pool);
  blobs = new LocalBlobStore(mkdtempSync(join(tmpdir(), 'repowalk-import-')));
});
afterAll(async () => pool?.end());

function rev(n: number): string {
  return TID.create(1_700_000_000_000_000 + n * 1_000_000, 0);
}

async function importCar(made: { car: Uint8Array; did: string; signingKey: string }, opts: { filter?: FilterOptions; ephemeral?: number } = {}): Promise<ImportResult> {
  const repo = await verifyRepo(made.car, { did: made.did, signingKey: made.signingKey });
  return importRepo({ pool, blobs }, { repo, pds: 'https://pds.example', handle: 'alice.test', signingKey: made.signingKey, filter: opts.filter ?? FULL, ephemeralRetentionSeconds: opts.ephemeral });
}


async function storedRecords(did: string): Promise<string[]> {
  const { rows } = await pool.query<{ p: string; cid: Buffer }>(`SELECT collection || '/' || rkey AS p, cid FROM records WHERE did = $1 ORDER BY 1`, [did]);
  return rows.map((r) => `${r.p}=${r.cid.toString('hex')}`);
}

async function eventsOf(did: string, since = 0): Promise<string[]> {
  const { rows } = await pool.query<{ kind: string; collection: string | null; rkey: string | null }>(
    'SELECT kind, collection, rkey FROM events WHERE did = $1 AND id > $2 ORDER BY kind, collection, rkey',
    [did, since],
  );
  return rows.map((r) => `${r.kind} ${r.collection}/${r.rkey}`);
}

async function maxEventId(): Promise<number> {
  const { rows } = await pool.query<{ m: string | null }>('SELECT max(id) AS m FROM events');
  return Number(rows[0]!.m ?? 0);
}

/** `n` records of about `bytes` bytes each (long post texts), so that a few make a large pack. */
function bulkyRecords(n: number, bytes: number): RecordInput[] {
  return Array.from({ length: n }, (_, i) => ({
    collection: 'app.bsky.feed.post',
    rkey: TID.create(1_750_000_000_000_000 + i, 3),
    value: { $type: 'app.bsky.feed.post', text: `${i} `.padEnd(bytes, 'x'), createdAt: new Date(0).toISOString() },
  }));
}

describe('importRepo', () => {
  let keypair: TestKeypair;
  const did = 'did:plc:importtest000000000000000';
  let base: RecordInput[];

  beforeAll(async () => {
    keypair = await newKeypair();
    base = generateRecords(60);
  });

  it('stores a new repo: records, one pack, create events, refcounts and repo state', async () => {
    const made = await makeRepo({ did, records: base, keypair, rev: rev(1) });
    const result = await importCar(made);
    expect(result).toMatchObject({ kind: 'imported', created: 60, updated: 0, deleted: 0, unchanged: 0 });
    expect(await storedRecords(did)).toEqual(made.records.map((r) => `${r.path}=${cidBytes(r.cid).toString('hex')}`).sort());
    expect((await eventsOf(did)).filter((e) => e.startsWith('create'))).toHaveLength(60);
    expect(await refcountProblems(pool)).toEqual([]);
    const { rows } = await pool.query('SELECT status, rev, records_count FROM repos WHERE did = $1', [did]);
    expect(rows[0]).toMatchObject({ status: 'active', rev: rev(1), records_count: '60' });
    // Every record block reads back from its pack, hash-checked.
    for (const r of made.records.slice(0, 10)) {
      const loc = await locateBlock(pool, cidBytes(r.cid));
      expect(loc).not.toBeNull();
      await readBlock(blobs, loc!.packKey, loc!.offset, loc!.length, cidBytes(r.cid));
    }
  });

  it('changes nothing when the same or an older rev is imported again', async () => {
    const before = await maxEventId();
    const same = await makeRepo({ did, records: base, keypair, rev: rev(1) });
    expect(await importCar(same)).toMatchObject({ kind: 'skipped', storedRev: rev(1) });
    const older = await makeRepo({ did, records: base.slice(5), keypair, rev: rev(0) });
    expect(await importCar(older)).toMatchObject({ kind: 'skipped' });
    expect(await maxEventId()).toBe(before);
    expect(await refcountProblems(pool)).toEqual([]);
  });

  it('emits exactly the creates, updates and deletes of a newer rev, and keeps refcounts right', async () => {
    const before = await maxEventId();
    const deleted = base.slice(0, 3);
    const updated = base.slice(3, 5).map((r) => ({ ...r, value: { ...r.value, text: `edited ${r.rkey}` } }));
    const created = generateRecords(64).slice(60);
    const next = [...updated, ...base.slice(5), ...created];
    const made = await makeRepo({ did, records: next, keypair, rev: rev(2) });
    const result = await importCar(made);
    expect(result).toMatchObject({ kind: 'imported', created: 4, updated: 2, deleted: 3, unchanged: 55 });
    const path = (r: RecordInput) => `${r.collection}/${r.rkey}`;
    expect(await eventsOf(did, before)).toEqual(
      [...created.map((r) => `create ${path(r)}`), ...deleted.map((r) => `delete ${path(r)}`), ...updated.map((r) => `update ${path(r)}`)].sort(),
    );
    expect(await storedRecords(did)).toEqual(made.records.map((r) => `${r.path}=${cidBytes(r.cid).toString('hex')}`).sort());
    expect(await refcountProblems(pool)).toEqual([]);
  });

  it('keeps only filtered collections, and drops a repo with no record in a signal collection', async () => {
    const fdid = 'did:plc:importfilter0000000000000';
    const made = await makeRepo({ did: fdid, records: generateRecords(40), keypair, rev: rev(1) });
    const filter = FilterOptions.parse({ mode: 'filter', include: ['app.bsky.feed.*'], exclude: ['app.bsky.feed.like'] });
    const kept = made.records.filter((r) => r.collection.startsWith('app.bsky.feed.') && r.collection !== 'app.bsky.feed.like');
    expect(await importCar(made, { filter })).toMatchObject({ kind: 'imported', created: kept.length });
    expect(await storedRecords(fdid)).toHaveLength(kept.length);

    // A signal collection the repo lacks drops it, even though it was mirrored before.
    const signalled = FilterOptions.parse({ mode: 'filter', include: ['app.bsky.feed.*'], signal: ['com.whtwnd.blog.entry'] });
    const newer = await makeRepo({ did: fdid, records: generateRecords(41), keypair, rev: rev(2) });
    expect(await importCar(newer, { filter: signalled })).toMatchObject({ kind: 'dropped' });
    expect(await storedRecords(fdid)).toEqual([]);
    const { rows } = await pool.query('SELECT status FROM repos WHERE did = $1', [fdid]);
    expect(rows[0].status).toBe('dropped');
    expect(await refcountProblems(pool)).toEqual([]);

    // The signal test does not depend on the collection filter: a signal collection outside `include` still counts.
    const withSignal = await makeRepo({ did: fdid, records: [...generateRecords(41), { collection: 'com.whtwnd.blog.entry', rkey: '3kblog00000001', value: { $type: 'com.whtwnd.blog.entry', content: 'x' } }], keypair, rev: rev(3) });
    const r = await importCar(withSignal, { filter: signalled });
    expect(r).toMatchObject({ kind: 'imported' });
    expect((await storedRecords(fdid)).some((p) => p.startsWith('com.whtwnd'))).toBe(false);
    expect(await refcountProblems(pool)).toEqual([]);
  });

  it('in ephemeral mode keeps events with an expiry, and no record index', async () => {
    const edid = 'did:plc:importephemeral00000000000';
    const made = await makeRepo({ did: edid, records: generateRecords(12), keypair, rev: rev(1) });
    expect(await importCar(made, { ephemeral: 3600 })).toMatchObject({ kind: 'imported', created: 12 });
    expect(await storedRecords(edid)).toEqual([]);
    const { rows } = await pool.query(`SELECT count(*)::int AS n, min(expires_at) > now() + interval '50 minutes' AS later FROM events WHERE did = $1 AND kind = 'create'`, [edid]);
    expect(rows[0]).toEqual({ n: 12, later: true });
    expect(await refcountProblems(pool)).toEqual([]);
  });

  it('waits while GC sweeps (its lock held exclusively) before it looks for blocks to reuse', async () => {
    const wdid = 'did:plc:importwaitsforgc00000000000';
    const gc = await pool.connect();
    try {
      await gc.query('BEGIN');
      await gc.query('SELECT pg_advisory_xact_lock($1)', [GC_LOCK_KEY]);
      let finished = false;
      const importing = importCar(await makeRepo({ did: wdid, records: generateRecords(3), keypair, rev: rev(1) })).then((r) => ((finished = true), r));
      await new Promise((r) => setTimeout(r, 500));
      expect(finished).toBe(false);
      await gc.query('COMMIT');
      expect(await importing).toMatchObject({ kind: 'imported', created: 3 });
    } finally {
      gc.release();
    }
  });

  it('records an account event when a gone account serves its repo again', async () => {
    const gdid = 'did:plc:importgone00000000000000000';
    await importCar(await makeRepo({ did: gdid, records: generateRecords(5), keypair, rev: rev(1) }));
    await markGone(pool, gdid, { status: 'deactivated', recheckAt: new Date(Date.now() + 3600_000), detail: 'RepoDeactivated' });
    expect(await importCar(await makeRepo({ did: gdid, records: generateRecords(5), keypair, rev: rev(2) }))).toMatchObject({ kind: 'imported', unchanged: 5 });
    const { rows } = await pool.query(`SELECT detail FROM events WHERE did = $1 AND kind = 'account' ORDER BY id`, [gdid]);
    expect(rows.map((r) => r.detail)).toEqual([{ status: 'deactivated' }, { status: 'active', was: 'gone' }]);
    const repoRow = await pool.query('SELECT status, gone_status FROM repos WHERE did = $1', [gdid]);
    expect(repoRow.rows[0]).toEqual({ status: 'active', gone_status: null });
  });

  it('with hashes checked during the store, imports a good repo as eagerly and refuses a bad block before COMMIT, storing nothing of it', async () => {
    const ddid = 'did:plc:importdeferred0000000000000';
    const first = await makeRepo({ did: ddid, records: generateRecords(40), keypair, rev: rev(1) });
    const deferred = await verifyRepo(first.car, { did: ddid, signingKey: first.signingKey, deferBlockHashes: true });
    expect(deferred.blocksChecked).toBeDefined();
    expect(await importRepo({ pool, blobs }, { repo: deferred, pds: 'https://pds.example', handle: undefined, signingKey: first.signingKey, filter: FULL })).toMatchObject({ kind: 'imported', created: 40 });
    expect(await storedRecords(ddid)).toEqual(first.records.map((r) => `${r.path}=${cidBytes(r.cid).toString('hex')}`).sort());

    // A newer rev whose one new record's block is corrupt: nothing but the hash check notices.
    const records = [...generateRecords(40), { collection: 'app.bsky.feed.post', rkey: TID.create(1_800_000_000_000_000, 1), value: { $type: 'app.bsky.feed.post', text: 'new', createdAt: new Date(0).toISOString() } }];
    const next = await makeRepo({ did: ddid, records, keypair, rev: rev(2) });
    const added = next.records.find((r) => !first.records.some((f) => f.path === r.path))!;
    const bad = flipByte(next.car, added.cid);
    await expect(verifyRepo(bad, { did: ddid, signingKey: next.signingKey })).rejects.toThrow(BlockHashMismatchError);
    const before = { events: await maxEventId(), records: await storedRecords(ddid), blocks: (await pool.query('SELECT count(*) AS n FROM blocks')).rows[0].n };
    const repo = await verifyRepo(bad, { did: ddid, signingKey: next.signingKey, deferBlockHashes: true });
    const failed = await importRepo({ pool, blobs }, { repo, pds: 'https://pds.example', handle: undefined, signingKey: next.signingKey, filter: FULL }).then(() => undefined, (e: unknown) => e);
    expect(failed).toBeInstanceOf(BlockHashMismatchError);
    expect((failed as BlockHashMismatchError).cid).toBe(added.cid);
    expect(await maxEventId()).toBe(before.events);
    expect(await storedRecords(ddid)).toEqual(before.records);
    expect((await pool.query('SELECT count(*) AS n FROM blocks')).rows[0].n).toBe(before.blocks);
    expect(await locateBlock(pool, cidBytes(added.cid))).toBeNull();
    const { rows } = await pool.query('SELECT rev FROM repos WHERE did = $1', [ddid]);
    expect(rows[0]).toEqual({ rev: rev(1) });
    expect(await refcountProblems(pool)).toEqual([]);
  });

  it('stores nothing when the blobstore fails part way through the pack, and keeps what it stored before', async () => {
    const fdid = 'did:plc:importfailedupload0000000000';
    const first = await makeRepo({ did: fdid, records: generateRecords(30), keypair, rev: rev(1) });
    expect(await importCar(first)).toMatchObject({ kind: 'imported', created: 30 });
    // A newer rev whose pack is over a MiB: the store reads it in several pieces.
    const next = await makeRepo({ did: fdid, records: generateRecords(30).concat(bulkyRecords(12, 120_000)), keypair, rev: rev(2) });
    const before = { events: await maxEventId(), records: await storedRecords(fdid), blocks: (await pool.query('SELECT count(*) AS n FROM blocks')).rows[0].n, packs: await blobs.list('packs/') };
    let read = 0;
    let size = 0;
    const failing = new Proxy(blobs, {
      get(target, prop, receiver) {
        if (prop !== 'put') return Reflect.get(target, prop, receiver);
        return (key: string, body: Uint8Array | ByteSource) => {
          if (body instanceof Uint8Array) throw new Error('the pack came whole');
          size = body.size;
          return target.put(key, {
            size: body.size,
            read(offset: number, into: Uint8Array) {
              if (read >= 1024 * 1024) throw new Error('the blobstore failed part way');
              read += into.length;
              body.read(offset, into);
            },
          });
        };
      },
    });
    const repo = await verifyRepo(next.car, { did: fdid, signingKey: next.signingKey });
    await expect(importRepo({ pool, blobs: failing }, { repo, pds: 'https://pds.example', handle: undefined, signingKey: next.signingKey, filter: FULL })).rejects.toThrow(/failed part way/);
    expect(size).toBeGreaterThan(1024 * 1024);
    expect(read).toBeGreaterThan(0);
    expect(await blobs.list('packs/')).toEqual(before.packs);
    expect(await maxEventId()).toBe(before.events);
    expect(await storedRecords(fdid)).toEqual(before.records);
    expect((await pool.query('SELECT count(*) AS n FROM blocks')).rows[0].n).toBe(before.blocks);
    const { rows } = await pool.query('SELECT rev FROM repos WHERE did = $1', [fdid]);
    expect(rows[0]).toEqual({ rev: rev(1) });
    expect(await refcountProblems(pool)).toEqual([]);
    for (const r of first.records) {
      const loc = (await locateBlock(pool, cidBytes(r.cid)))!;
      await readBlock(blobs, loc.packKey, loc.offset, loc.length, cidBytes(r.cid));
    }
    // The same import through a working blobstore then stores it whole.
    expect(await importCar(next)).toMatchObject({ kind: 'imported', created: 12 });
  });

  it('removes a deleted repo\'s records, events and references', async () => {
    await dropRepo(pool, did, 'deleted', { reason: 'RepoNotFound' });
    expect(await storedRecords(did)).toEqual([]);
    expect(await eventsOf(did)).toEqual(['account null/null']);
    const { rows } = await pool.query('SELECT status, head_cid FROM repos WHERE did = $1', [did]);
    expect(rows[0]).toEqual({ status: 'deleted', head_cid: null });
    expect(await refcountProblems(pool)).toEqual([]);
  });
});
