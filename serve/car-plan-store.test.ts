/**
 * Stored CAR plans (migration 0006): a head walked once is sent by any reader from its stored
 * plan — no walk, no block index query — and the CAR verifies with `@atproto/repo` and holds
 * the walked CAR's blocks; a new head is walked again; a damaged range is never sent; a pack
 * row deleted (GC's sweep) takes the plan out of use.
 */
import { takeRelease } from './lent.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import type pg from 'pg';
import * as TID from '@atcute/tid';
import { verifyRepoCar } from '@atproto/repo';
import { freshDatabase } from '../test/stack.ts';
import { openPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { buildMirror, testDids } from '../test/mirror.ts';
import { makeRepo, type MadeRepo } from '../atproto/testing/make-repo.ts';
import { verifyRepo } from '../atproto/verify.ts';
import { importRepo } from '../backfill/import.ts';
import { readCar } from '../atproto/car.ts';
import { MissingBlockError, PackBlockReader, PackCache } from './blocks.ts';
import { RepoCarPlans, repoCar, type StoredCarPlans } from './repo-car.ts';
import { CarPlanStore } from './car-plan-store.ts';
import { PLAN_MIN_BYTES, decodePlan, encodePlan, packCarPlan, type StoredPiece } from '../storage/car-plans.ts';
import { layOutPack } from '../storage/packs.ts';
import { startServeServer } from './server.ts';

let pool: pg.Pool;
let dir: string;
let store: LocalBlobStore;
let plans: CarPlanStore;

async function headOf(did: string): Promise<{ head: Buffer; data: Buffer }> {
  const { rows } = await pool.query<{ head_cid: Buffer; data_cid: Buffer }>('SELECT head_cid, data_cid FROM repos WHERE did = $1', [did]);
  return { head: rows[0]!.head_cid, data: rows[0]!.data_cid };
}

async function car(reader: PackBlockReader, did: string, opts: { memory?: RepoCarPlans; stored?: boolean } = {}): Promise<Buffer> {
  const { head, data } = await headOf(did);
  const stored: StoredCarPlans | undefined = opts.stored === false ? undefined : { plans, did };
  const chunks: Uint8Array[] = [];
  for await (const c of repoCar(reader, { head, dataRoot: data }, opts.memory, stored)) chunks.push(c);
  return Buffer.concat(chunks);
}

const blockSet = (bytes: Uint8Array) => [...readCar(bytes).blocks.keys()].sort();
const createsOf = (v: Awaited<ReturnType<typeof verifyRepoCar>>) => v.creates.map((c) => `${c.collection}/${c.rkey}@${c.cid}`).sort();
const recordsOf = (m: MadeRepo) => m.records.map((r) => `${r.collection}/${r.rkey}@${r.cid}`).sort();

type Range = Extract<StoredPiece, { pack: number }>;
const rangesOf = (pieces: StoredPiece[]) => pieces.filter((p): p is Range => 'pack' in p);

beforeAll(async () => {
  pool = openPool(await freshDatabase('serve_car_plans'));
  await migrate(pool);
  dir = await mkdtemp(join(tmpdir(), 'repowalk-serve-plans-'));
  store = new LocalBlobStore(dir);
  // Small repos: planned here whatever their size (a server plans CARs from 256 KiB).
  plans = new CarPlanStore(pool, () => {}, { minBytes: 0 });
});

afterAll(async () => {
  await pool?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('stored CAR plans', () => {
  it('encode and decode round-trip, and bytes that are not a plan decode to null', () => {
    const pieces: StoredPiece[] = [{ bytes: Buffer.from([1, 2, 3]) }, { pack: 1, start: 2 ** 40 + 5, end: 2 ** 40 + 4_000_000, crc: 0xfedcba98 }];
    expect(decodePlan(encodePlan(pieces))).toEqual(pieces);
    const bytes = encodePlan(pieces);
    expect(decodePlan(bytes.subarray(0, bytes.length - 1))).toBeNull();
    expect(decodePlan(Buffer.concat([bytes, Buffer.from([0])]))).toBeNull();
    expect(decodePlan(Buffer.from([9, 0, 0, 0, 0]))).toBeNull();
  });

  it('a first import stores its plan: a fresh reader sends the walked CAR from it, with no walk, and it verifies', async () => {
    // The first repo of this database: its import's pack holds exactly its blocks (and is more
    // than the 256 KiB from which an import plans).
    const [repo] = await buildMirror({ pool, blobs: store }, [{ did: testDids('carplan', 1)[0]!, records: 1500 }]);
    const { head } = await headOf(repo!.did);
    const stored = await plans.load(repo!.did, head);
    expect(stored).not.toBeNull();
    expect(stored!.packKeys).toHaveLength(1);
    const { rows: packRows } = await pool.query<{ size_bytes: string }>('SELECT size_bytes FROM packs WHERE key = $1', [stored!.packKeys[0]]);
    expect(Number(packRows[0]!.size_bytes)).toBeGreaterThan(PLAN_MIN_BYTES);
    const walker = new PackBlockReader(pool, store);
    const walked = await car(walker, repo!.did, { stored: false });
    expect(walker.indexQueries).toBeGreaterThan(0);

    // A reader of another server: nothing in memory.
    const fresh = new PackBlockReader(pool, store);
    const planned = await car(fresh, repo!.did);
    expect([fresh.blocks.size, fresh.indexQueries, fresh.packsIndexed]).toEqual([0, 0, 0]);
    // Header and commit, then the pack's frames before and after the commit's.
    const kinds = stored!.pieces.map((p) => ('bytes' in p ? 'bytes' : 'range'));
    expect(kinds[0]).toBe('bytes');
    expect(kinds.slice(1).every((k) => k === 'range')).toBe(true);
    expect(kinds.length).toBeLessThanOrEqual(3);
    expect(fresh.gets).toBe(rangesOf(stored!.pieces).length);
    expect(planned.equals(walked)).toBe(true);
    expect(blockSet(planned)).toEqual(blockSet(repo!.car));
    expect(readCar(planned).blocks.size).toBe(readCar(repo!.car).blocks.size);
    expect(createsOf(await verifyRepoCar(planned, repo!.did, repo!.signingKey))).toEqual(recordsOf(repo!));

    // Its plan is kept in memory; its ranges, read into reused buffers, are not kept the first
    // time. Asked again, the head's ranges are read and kept in the pack cache: the next request
    // reads nothing.
    const cache = new PackCache(64 * 1024 * 1024);
    const memory = new RepoCarPlans();
    await car(new PackBlockReader(pool, store, { cache }), repo!.did, { memory });
    expect(memory.size).toBe(1);
    const again = new PackBlockReader(pool, store, { cache });
    expect((await car(again, repo!.did, { memory })).equals(walked)).toBe(true);
    expect([again.gets, again.indexQueries]).toEqual([rangesOf(stored!.pieces).length, 0]);
    const warm = new PackBlockReader(pool, store, { cache });
    expect((await car(warm, repo!.did, { memory })).equals(walked)).toBe(true);
    expect([warm.gets, warm.indexQueries]).toEqual([0, 0]);
  });

  it('cold requests reuse read buffers only once the consumer released them: chunks a consumer kept stay as they were', async () => {
    const [repo] = await buildMirror({ pool, blobs: store }, [{ did: testDids('carplanlend', 1)[0]!, records: 1500 }]);
    const walked = await car(new PackBlockReader(pool, store), repo!.did, { stored: false });
    const { head, data } = await headOf(repo!.did);
    const stored = { plans, did: repo!.did };
    // A consumer that keeps the chunks it was given and releases nothing (as a test or an
    // in-process caller does).
    const kept: Uint8Array[] = [];
    for await (const c of repoCar(new PackBlockReader(pool, store), { head, dataRoot: data }, undefined, stored)) kept.push(c);
    // Consumers that copy each chunk and then release it (as the server does once the socket
    // wrote it), two at once and then one more.
    const buffersSeen: ArrayBufferLike[][] = [];
    const released = async () => {
      const copies: Buffer[] = [];
      const seen: ArrayBufferLike[] = [];
      for await (const c of repoCar(new PackBlockReader(pool, store), { head, dataRoot: data }, undefined, stored)) {
        copies.push(Buffer.from(c));
        const release = takeRelease(c);
        if (release) {
          seen.push(c.buffer);
          release();
        }
      }
      buffersSeen.push(seen);
      return Buffer.concat(copies);
    };
    const [a, b] = await Promise.all([released(), released()]);
    const c = await released();
    for (const x of [a, b, c]) expect(x.equals(walked)).toBe(true);
    // The ranges were lent, and a buffer released by one request was read into by a later one.
    expect(buffersSeen.every((s) => s.length > 0)).toBe(true);
    expect(buffersSeen[2]!.some((buf) => buffersSeen[0]!.includes(buf) || buffersSeen[1]!.includes(buf))).toBe(true);
    // None of them wrote into what the first consumer kept.
    expect(Buffer.concat(kept).equals(walked)).toBe(true);
    expect(kept.some((k) => buffersSeen.flat().includes(k.buffer))).toBe(false);
  });

  it('over HTTP, fresh servers send a plan of many ranges right, one request at a time and several at once (read buffers reused once written)', async () => {
    const [repo] = await buildMirror({ pool, blobs: store }, [{ did: testDids('carplanhttp', 1)[0]!, records: 1500 }]);
    const good = await car(new PackBlockReader(pool, store), repo!.did);
    const { head } = await headOf(repo!.did);
    const plan = (await plans.load(repo!.did, head))!;
    // Its range in twelve pieces, so that a request has reads ahead while buffers are written.
    const at = plan.pieces.findIndex((p) => 'pack' in p);
    const whole = plan.pieces[at] as Range;
    const bytes = await readFile(join(dir, plan.packKeys[whole.pack]!));
    const step = Math.ceil((whole.end - whole.start) / 12);
    const split: StoredPiece[] = [];
    for (let from = whole.start; from < whole.end; from += step) {
      const end = Math.min(whole.end, from + step);
      split.push({ pack: whole.pack, start: from, end, crc: crc32(bytes.subarray(from, end)) });
    }
    const pieces = [...plan.pieces.slice(0, at), ...split, ...plan.pieces.slice(at + 1)];
    expect(await plans.save(repo!.did, head, { packKeys: plan.packKeys, pieces })).toBe(true);
    const get = async () => {
      const server = await startServeServer({ pool, store, log: () => {} });
      try {
        const res = await fetch(`${server.url}/xrpc/com.atproto.sync.getRepo?did=${repo!.did}`);
        expect(res.status).toBe(200);
        return Buffer.from(await res.arrayBuffer());
      } finally {
        await server.close();
      }
    };
    for (let i = 0; i < 3; i++) expect((await get()).equals(good)).toBe(true);
    const together = await Promise.all([get(), get(), get(), get()]);
    for (const body of together) expect(body.equals(good)).toBe(true);
  });

  it('a repo sharing blocks with others is walked once, then planned; after an update the CAR is the new head, walked once and then planned', async () => {
    const did = testDids('carplanupd', 1)[0]!;
    const [first] = await buildMirror({ pool, blobs: store }, [{ did, records: 300 }]);
    const { head: oldHead } = await headOf(did);
    // Its records were stored by the first repo's import: no plan from the import.
    expect(await plans.load(did, oldHead)).toBeNull();
    const before = await car(new PackBlockReader(pool, store), did);
    expect(await plans.load(did, oldHead)).not.toBeNull();

    const next = await makeRepo({ did, records: 340, keypair: first!.keypair, rev: TID.create(1_700_000_100_000_000, 0) });
    const verified = await verifyRepo(next.car, { did, signingKey: next.signingKey });
    const result = await importRepo({ pool, blobs: store }, { repo: verified, pds: 'https://pds.invalid', handle: undefined, signingKey: next.signingKey, filter: { mode: 'full', include: [], exclude: [], signal: [] } });
    expect(result.kind).toBe('imported');
    const { head: newHead } = await headOf(did);
    expect(newHead.equals(oldHead)).toBe(false);
    expect(await plans.load(did, newHead)).toBeNull();

    const walkedNew = new PackBlockReader(pool, store);
    const after = await car(walkedNew, did);
    expect(walkedNew.indexQueries).toBeGreaterThan(0);
    expect(readCar(after).root).toBe(next.commitCid);
    expect(createsOf(await verifyRepoCar(after, did, next.signingKey))).toEqual(recordsOf(next));
    expect(blockSet(after)).toEqual(blockSet(next.car));
    expect(after.equals(before)).toBe(false);
    // One plan per repo: the new head's replaced the old one.
    expect(await plans.load(did, oldHead)).toBeNull();
    const fresh = new PackBlockReader(pool, store);
    expect((await car(fresh, did)).equals(after)).toBe(true);
    expect([fresh.blocks.size, fresh.indexQueries]).toEqual([0, 0]);
  });

  it('a damaged first range is not sent: the walk is tried instead and refuses the pack; the plan is dropped', async () => {
    const [repo] = await buildMirror({ pool, blobs: store }, [{ did: testDids('carplanbad', 1)[0]!, records: 400 }]);
    const good = await car(new PackBlockReader(pool, store), repo!.did);
    const { head } = await headOf(repo!.did);
    const plan = (await plans.load(repo!.did, head))!;
    const range = rangesOf(plan.pieces)[0]!;
    const path = join(dir, plan.packKeys[range.pack]!);
    const bytes = await readFile(path);
    const bad = Buffer.from(bytes);
    bad[range.start + 100]! ^= 0x01;
    await writeFile(path, bad);
    try {
      const sent: Uint8Array[] = [];
      const { data } = await headOf(repo!.did);
      const err = await (async () => {
        for await (const c of repoCar(new PackBlockReader(pool, store), { head, dataRoot: data }, undefined, { plans, did: repo!.did })) sent.push(c);
      })().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MissingBlockError);
      expect((err as Error).message).toMatch(/does not hash to its key/);
      expect(sent).toEqual([]);
      expect(await plans.load(repo!.did, head)).toBeNull();

      // Over HTTP, the plan stored again first: an error status, no CAR.
      await writeFile(path, bytes);
      await car(new PackBlockReader(pool, store), repo!.did);
      expect(await plans.load(repo!.did, head)).not.toBeNull();
      await writeFile(path, bad);
      const server = await startServeServer({ pool, store, log: () => {} });
      try {
        const res = await fetch(`${server.url}/xrpc/com.atproto.sync.getRepo?did=${repo!.did}`);
        expect(res.status).toBe(500);
        expect(((await res.json()) as { error: string }).error).toBe('InternalServerError');
      } finally {
        await server.close();
      }
    } finally {
      await writeFile(path, bytes);
    }
    // Repaired: walked, planned, and the same CAR again.
    expect((await car(new PackBlockReader(pool, store), repo!.did)).equals(good)).toBe(true);
  });

  it('a damaged later range ends the CAR with an error after only checked bytes', async () => {
    const [repo] = await buildMirror({ pool, blobs: store }, [{ did: testDids('carplanlate', 1)[0]!, records: 500 }]);
    const good = await car(new PackBlockReader(pool, store), repo!.did);
    const { head, data } = await headOf(repo!.did);
    const plan = (await plans.load(repo!.did, head))!;
    // A small repo's range is sent in one piece: split its first in three (as a large repo's
    // ranges are) and store that.
    const at = plan.pieces.findIndex((p) => 'pack' in p);
    const whole = plan.pieces[at] as Range;
    const path = join(dir, plan.packKeys[whole.pack]!);
    const bytes = await readFile(path);
    const third = Math.floor((whole.end - whole.start) / 3);
    expect(third).toBeGreaterThan(100);
    const cuts = [whole.start, whole.start + third, whole.start + 2 * third, whole.end];
    const split: StoredPiece[] = cuts.slice(1).map((end, i) => ({ pack: whole.pack, start: cuts[i]!, end, crc: crc32(bytes.subarray(cuts[i]!, end)) }));
    const pieces = [...plan.pieces.slice(0, at), ...split, ...plan.pieces.slice(at + 1)];
    expect(await plans.save(repo!.did, head, { packKeys: plan.packKeys, pieces })).toBe(true);
    const fresh = new PackBlockReader(pool, store);
    expect((await car(fresh, repo!.did)).equals(good)).toBe(true);
    expect(fresh.gets).toBe(rangesOf(pieces).length);

    const bad = Buffer.from(bytes);
    bad[cuts[2]! + 5]! ^= 0x80;
    await writeFile(path, bad);
    try {
      const sent: Uint8Array[] = [];
      const err = await (async () => {
        for await (const c of repoCar(new PackBlockReader(pool, store), { head, dataRoot: data }, undefined, { plans, did: repo!.did })) sent.push(c);
      })().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MissingBlockError);
      expect((err as Error).message).toMatch(/do not match their CRC/);
      // What was sent is the good CAR's beginning, up to the damaged range.
      const prefix = Buffer.concat(sent);
      expect(prefix.length).toBeGreaterThan(0);
      expect(prefix.length).toBeLessThan(good.length);
      expect(prefix.equals(good.subarray(0, prefix.length))).toBe(true);
      expect(await plans.load(repo!.did, head)).toBeNull();
    } finally {
      await writeFile(path, bytes);
    }
  });

  it('small CARs get no plan, from an import or from a walk', async () => {
    const [repo] = await buildMirror({ pool, blobs: store }, [{ did: testDids('carplansmall', 1)[0]!, records: 20 }]);
    const { head } = await headOf(repo!.did);
    const big = new CarPlanStore(pool);
    const chunks: Uint8Array[] = [];
    const { data } = await headOf(repo!.did);
    for await (const c of repoCar(new PackBlockReader(pool, store), { head, dataRoot: data }, undefined, { plans: big, did: repo!.did })) chunks.push(c);
    expect(Buffer.concat(chunks).length).toBeLessThan(PLAN_MIN_BYTES);
    expect(await plans.load(repo!.did, head)).toBeNull();
    expect(packCarPlan(head, layOutPack(0, () => head, () => new Uint8Array(0)))).toBeNull();
  });

  it('deleting a pack row (as GC sweeps) takes the plans that read it out of use, in the same transaction', async () => {
    const [repo] = await buildMirror({ pool, blobs: store }, [{ did: testDids('carplangc', 1)[0]!, records: 200 }]);
    await car(new PackBlockReader(pool, store), repo!.did);
    const { head } = await headOf(repo!.did);
    const plan = (await plans.load(repo!.did, head))!;
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      const { rows } = await client.query<{ id: string }>('SELECT id FROM packs WHERE key = $1', [plan.packKeys[0]]);
      await client.query('DELETE FROM blocks WHERE pack_id = $1', [rows[0]!.id]);
      await client.query('DELETE FROM packs WHERE id = $1', [rows[0]!.id]);
      const { rows: links } = await client.query<{ pack_id: string }>('SELECT pack_id FROM repo_car_plan_packs WHERE did = $1', [repo!.did]);
      expect(links.map((l) => l.pack_id)).not.toContain(rows[0]!.id);
      expect(links).toHaveLength(plan.packKeys.length - 1);
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    expect(await plans.load(repo!.did, head)).toBeNull();
  });
});
