/**
 * CARs assembled from packs, checked by `@atproto/repo` (an implementation nobody here wrote):
 * getRepo whole-pack and by ranges gives the same blocks and verifies; a record proof verifies;
 * a damaged pack is refused, whichever way it is read, instead of served.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { verifyRepoCar, verifyRecords } from '@atproto/repo';
import { freshDatabase } from '../test/stack.ts';
import { openPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { buildMirror, testDids } from '../test/mirror.ts';
import { makeRepoCached, type MadeRepo } from '../atproto/testing/make-repo.ts';
import { verifyRepo } from '../atproto/verify.ts';
import { storeBatch } from '../ingest/store.ts';
import { recordFilter } from '../backfill/import.ts';
import { readCar } from '../atproto/car.ts';
import { MissingBlockError, PackBlockReader, PackCache } from './blocks.ts';
import { RepoCarPlans, recordProof, repoCar } from './repo-car.ts';

let pool: pg.Pool;
let dir: string;
let store: LocalBlobStore;
let repo!: MadeRepo;
let head: Buffer;
let data: Buffer;

async function car(reader: PackBlockReader, plans?: RepoCarPlans): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const c of repoCar(reader, { head, dataRoot: data }, plans)) chunks.push(c);
  return Buffer.concat(chunks);
}

beforeAll(async () => {
  pool = openPool(await freshDatabase('serve_car'));
  await migrate(pool);
  dir = await mkdtemp(join(tmpdir(), 'repowalk-serve-car-'));
  store = new LocalBlobStore(dir);
  repo = (await buildMirror({ pool, blobs: store }, [{ did: testDids('servecar', 1)[0]!, records: 700 }]))[0]!;
  const { rows } = await pool.query<{ head_cid: Buffer; data_cid: Buffer }>('SELECT head_cid, data_cid FROM repos WHERE did = $1', [repo!.did]);
  head = rows[0]!.head_cid;
  data = rows[0]!.data_cid;
});

afterAll(async () => {
  await pool?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('getRepo from packs', () => {
  it('whole packs and coalesced ranges give the same blocks, and verifyRepoCar accepts both', async () => {
    const whole = new PackBlockReader(pool, store);
    const ranged = new PackBlockReader(pool, store, { wholePackMax: 0 });
    const [a, b] = [await car(whole), await car(ranged)];
    expect(whole.gets).toBe(1);
    expect(ranged.gets).toBeGreaterThan(1);
    const blocksOf = (bytes: Uint8Array) => [...readCar(bytes).blocks.keys()].sort();
    expect(blocksOf(a)).toEqual(blocksOf(b));
    expect(blocksOf(a)).toEqual(blocksOf(repo.car));
    for (const bytes of [a, b]) {
      const verified = await verifyRepoCar(bytes, repo.did, repo.signingKey);
      expect(verified.creates.map((c) => `${c.collection}/${c.rkey}@${c.cid}`).sort()).toEqual(repo.records.map((r) => `${r.collection}/${r.rkey}@${r.cid}`).sort());
    }
  });

  it('repos stored by one batch share a pack, and each CAR holds exactly its own blocks (the second from the cached pack and its index)', async () => {
    const made = await Promise.all(testDids('servecarbatch', 2).map((did, i) => makeRepoCached({ did, records: 150 + i * 40 })));
    const changes = await Promise.all(
      made.map(async (m) => ({ kind: 'snapshot' as const, repo: await verifyRepo(m.car, { did: m.did, signingKey: m.signingKey }), pds: 'https://pds.invalid', handle: undefined, signingKey: m.signingKey })),
    );
    const batch = await storeBatch({ pool, blobs: store }, changes, { filter: recordFilter({ mode: 'full', include: [], exclude: [], signal: [] }), origin: 'backfill' });
    // Both commits sit in the batch's one pack.
    const { rows: shared } = await pool.query<{ n: string }>(
      'SELECT count(*) AS n FROM repos r JOIN blocks b ON b.cid = r.head_cid JOIN packs p ON p.id = b.pack_id WHERE r.did = ANY($1) AND p.key = $2',
      [made.map((m) => m.did), batch.packKey],
    );
    expect(Number(shared[0]!.n)).toBe(2);
    const cache = new PackCache(64 * 1024 * 1024, { keepIndexMin: 0 });
    let firstIndexed = 0;
    for (const [i, m] of made.entries()) {
      const { rows } = await pool.query<{ head_cid: Buffer; data_cid: Buffer }>('SELECT head_cid, data_cid FROM repos WHERE did = $1', [m.did]);
      const reader = new PackBlockReader(pool, store, { cache });
      const chunks: Uint8Array[] = [];
      for await (const c of repoCar(reader, { head: rows[0]!.head_cid, dataRoot: rows[0]!.data_cid })) chunks.push(c);
      const bytes = Buffer.concat(chunks);
      // The pack holds both repos; the CAR has this repo's blocks only, each once.
      const blocks = readCar(bytes).blocks;
      expect([...blocks.keys()].sort()).toEqual([...readCar(m.car).blocks.keys()].sort());
      expect(blocks.size).toBe(readCar(m.car).blocks.size);
      const verified = await verifyRepoCar(bytes, m.did, m.signingKey);
      expect(verified.creates.length).toBe(m.records.length);
      // The first reads and indexes the batch's pack (and any older pack holding blocks the
      // repos share with earlier imports); the second reads no pack, and the batch's pack, the
      // first it loads, comes with its index.
      if (i === 0) firstIndexed = reader.packsIndexed;
      else expect([reader.gets, reader.packsIndexed]).toEqual([0, firstIndexed - 1]);
    }
    // A reader using the cached index copies it before adding another pack's blocks to it: the
    // cache's index still holds the batch's pack alone.
    const cachedIndex = cache.index(batch.packKey!)!;
    const before = cachedIndex.size;
    const mixed = new PackBlockReader(pool, store, { cache });
    const { rows: heads } = await pool.query<{ head_cid: Buffer }>('SELECT head_cid FROM repos WHERE did = $1', [made[0]!.did]);
    await mixed.getMany([heads[0]!.head_cid]);
    expect(mixed.blocks).toBe(cachedIndex);
    await mixed.getMany([head]);
    expect(mixed.blocks).not.toBe(cachedIndex);
    expect([cachedIndex.size, cachedIndex.indexOf(head), mixed.blocks.indexOf(head) >= 0]).toEqual([before, -1, true]);
  });

  it('a head sent once is sent again from its plan, without a walk, the same bytes; a damaged pack still refused', async () => {
    const plans = new RepoCarPlans();
    const first = await car(new PackBlockReader(pool, store), plans);
    expect(plans.size).toBe(1);
    const again = new PackBlockReader(pool, store);
    const second = await car(again, plans);
    expect(Buffer.compare(Buffer.from(second), Buffer.from(first))).toBe(0);
    // No block indexed and no block index query: the pack was read and sent by ranges.
    expect([again.blocks.size, again.indexQueries, again.gets]).toEqual([0, 0, 1]);
    expect((await verifyRepoCar(second, repo.did, repo.signingKey)).creates.length).toBe(repo.records.length);

    const { rows } = await pool.query<{ key: string }>('SELECT p.key FROM blocks b JOIN packs p ON p.id = b.pack_id WHERE b.cid = $1', [head]);
    const path = join(dir, rows[0]!.key);
    const good = await readFile(path);
    const bad = Buffer.from(good);
    bad[bad.length - 3]! ^= 0xff;
    await writeFile(path, bad);
    try {
      await expect(car(new PackBlockReader(pool, store), plans)).rejects.toThrow(/does not hash to its key/);
      expect(plans.size).toBe(0);
    } finally {
      await writeFile(path, good);
    }
  });

  it('readers sharing a pack cache read, check and index a pack once; a small-pack point reader uses a cached large pack', async () => {
    const cache = new PackCache(64 * 1024 * 1024, { keepIndexMin: 0 });
    const a = new PackBlockReader(pool, store, { cache });
    const first = await car(a);
    expect([a.gets, a.packsIndexed, cache.bytes > 0]).toEqual([1, 1, true]);
    const b = new PackBlockReader(pool, store, { cache });
    const second = await car(b);
    expect(Buffer.compare(Buffer.from(second), Buffer.from(first))).toBe(0);
    // The block index came from the cache: no blobstore read, no parse, the same blocks.
    expect([b.gets, b.packsIndexed, b.blocks.size]).toEqual([0, 0, a.blocks.size]);
    expect((await verifyRepoCar(second, repo.did, repo.signingKey)).creates.length).toBe(repo.records.length);
    // A third reader still finds it.
    const c = new PackBlockReader(pool, store, { cache });
    expect(Buffer.compare(Buffer.from(await car(c)), Buffer.from(first))).toBe(0);
    expect([c.gets, c.packsIndexed]).toEqual([0, 0]);
    // By default only the index of a pack of 1 MiB or more is kept; this one is smaller.
    const { rows: packRows } = await pool.query<{ key: string; size_bytes: string }>('SELECT p.key, p.size_bytes FROM blocks b JOIN packs p ON p.id = b.pack_id WHERE b.cid = $1', [head]);
    expect(Number(packRows[0]!.size_bytes)).toBeLessThan(1024 * 1024);
    const small = new PackCache(64 * 1024 * 1024);
    await car(new PackBlockReader(pool, store, { cache: small }));
    expect([small.has(packRows[0]!.key), small.index(packRows[0]!.key)]).toEqual([true, undefined]);
    expect(cache.index(packRows[0]!.key)).toBeDefined();
    // A point reader reads packs whole only when small, but takes blocks from one the cache holds.
    const point = new PackBlockReader(pool, store, { wholePackMax: 1024, cache });
    const rec = repo.records[5]!;
    const { rows } = await pool.query<{ cid: Buffer }>('SELECT cid FROM records WHERE did = $1 AND collection = $2 AND rkey = $3', [repo.did, rec.collection, rec.rkey]);
    const [bytes] = await point.getMany([rows[0]!.cid]);
    expect(Buffer.from(bytes!).equals(Buffer.from(readCar(repo.car).blocks.get(rec.cid)!))).toBe(true);
    expect([point.gets, point.blocks.size]).toEqual([0, 1]);
  });

  it('a record proof verifies, for a key in the tree and one that is not', async () => {
    const rec = repo.records[123]!;
    const held = await recordProof(new PackBlockReader(pool, store), head, data, `${rec.collection}/${rec.rkey}`);
    expect(held.record).toBeDefined();
    expect((await verifyRecords(held.car, repo.did, repo.signingKey)).map((c) => `${c.collection}/${c.rkey}`)).toEqual([`${rec.collection}/${rec.rkey}`]);
    const absent = await recordProof(new PackBlockReader(pool, store), head, data, `${rec.collection}/zzzzzzzzzzzzz`);
    expect(absent.record).toBeUndefined();
    expect(await verifyRecords(absent.car, repo.did, repo.signingKey)).toEqual([]);
  });

  it('a damaged pack is refused, read whole or by range', async () => {
    const { rows } = await pool.query<{ key: string; byte_offset: string }>(
      'SELECT p.key, b.byte_offset FROM blocks b JOIN packs p ON p.id = b.pack_id ORDER BY b.byte_offset DESC LIMIT 1',
    );
    const path = join(dir, rows[0]!.key);
    const good = await readFile(path);
    const bad = Buffer.from(good);
    // A byte of one block's data.
    bad[Number(rows[0]!.byte_offset) + 1]! ^= 0xff;
    await writeFile(path, bad);
    try {
      await expect(car(new PackBlockReader(pool, store))).rejects.toThrow(/does not hash to its key/);
      const err = await car(new PackBlockReader(pool, store, { wholePackMax: 0 })).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MissingBlockError);
      expect((err as Error).message).toMatch(/does not hash to its CID/);
    } finally {
      await writeFile(path, good);
    }
  });
});
