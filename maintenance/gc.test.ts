/**
 * GC on a real mirror with real garbage: a repo re-imported at a later rev (its old commit and
 * changed MST nodes are dead, its old records live on through other repos and its old events), a
 * deleted repo (its own records are dead), a pack nobody indexed anything of use in, a pack
 * whose block has a refcount but no path from any head, an uploaded pack with no row, and blobs,
 * one referenced by a post and one by nothing.
 *
 * What must hold: nothing is deleted before the grace period; after each run every block a repo
 * head or an event reaches still reads back intact (checked from the repos' own CARs, without
 * the walker) and a validate walk finds nothing; the dead packs, the orphan and the dead blob
 * are gone once the grace period has passed; a pack whose live share is low is repacked, and the
 * old one goes on the next run.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import * as TID from '@atcute/tid';
import { freshDatabase } from '../test/stack.ts';
import { openPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { putPack } from '../storage/packs.ts';
import { blobKey } from '../storage/keys.ts';
import { dropRepo, importRepo } from '../backfill/import.ts';
import { verifyRepo } from '../atproto/verify.ts';
import { makeRepo, type MadeRepo } from '../atproto/testing/make-repo.ts';
import { cidFor } from '../atproto/testing/car-edit.ts';
import { MemoryFindings } from '../graph/findings.ts';
import { runWalk } from '../graph/run.ts';
import { buildMirror, testDids } from '../test/mirror.ts';
import { collectGarbage, lastGcReport, type GcReport } from './gc.ts';
import { randomPack, refcountMismatches, storeLoosePack, unreadableBlocks } from '../test/gc-fixtures.ts';

let pool: pg.Pool;
let dir: string;
let store: LocalBlobStore;
const [a, b, c, d] = testDids('gc', 4) as [string, string, string, string];
let madeA2: MadeRepo;
let madeB: MadeRepo;
let deadPack: { id: number; key: string; size: number };
let countedPack: { id: number; key: string };
let orphanKey: string;
let packOfA: { id: number; key: string };
let packOfC: { id: number; key: string };
const liveBlob = { cid: cidFor(new TextEncoder().encode('image 0'), 0x55), bytes: new TextEncoder().encode('image 0') };
const deadBlob = { cid: cidFor(new TextEncoder().encode('nobody links me'), 0x55), bytes: new TextEncoder().encode('nobody links me') };

const full = { mode: 'full' as const, include: [], exclude: [], signal: [] };

async function packOf(did: string): Promise<{ id: number; key: string }> {
  // The pack holding the repo's first commit: its first import's pack.
  const { rows } = await pool.query<{ id: string; key: string }>(
    `SELECT p.id, p.key FROM repos r JOIN blocks b ON b.cid = r.head_cid JOIN packs p ON p.id = b.pack_id WHERE r.did = $1`,
    [did],
  );
  return { id: Number(rows[0]!.id), key: rows[0]!.key };
}

async function packExists(p: { id: number; key: string }): Promise<{ row: boolean; blocks: number; object: boolean }> {
  const row = await pool.query('SELECT 1 FROM packs WHERE id = $1', [p.id]);
  const blocks = await pool.query<{ n: string }>('SELECT count(*) AS n FROM blocks WHERE pack_id = $1', [p.id]);
  return { row: (row.rowCount ?? 0) > 0, blocks: Number(blocks.rows[0]!.n), object: await store.has(p.key) };
}

/** Every pack, blob and orphan made older than any grace period. */
async function ageEverything(): Promise<void> {
  await pool.query(`UPDATE packs SET created_at = created_at - interval '2 days'`);
  await pool.query(`UPDATE blobs SET created_at = created_at - interval '2 days', updated_at = updated_at - interval '2 days'`);
  await pool.query(
    `UPDATE job_state SET value = (SELECT coalesce(jsonb_object_agg(k, '2000-01-01T00:00:00.000Z'), '{}'::jsonb) FROM jsonb_object_keys(value) AS k) WHERE key = 'gc:orphans'`,
  );
}

async function validateFindings(): Promise<string[]> {
  const { rows } = await pool.query<{ did: string }>('SELECT did FROM repos ORDER BY did');
  const findings = new MemoryFindings();
  await runWalk({ pool, store }, { type: 'validate' }, rows.map((r) => ({ type: 'Repo' as const, did: r.did })), { findings });
  return findings.findings.map((f) => `${f.check} ${f.nodeType} ${f.key}: ${f.detail}`);
}

/** What must hold after any GC run: everything reachable reads back, and a validate walk is clean. */
async function expectIntact(): Promise<void> {
  expect(await unreadableBlocks(pool, store, [madeA2.car, madeB.car])).toEqual([]);
  expect(await validateFindings()).toEqual([]);
  // The two blocks given a refcount that no row holds, on purpose (see countedPack), and no others.
  expect(await refcountMismatches(pool)).toBe(2);
  expect(await store.has(blobKey(liveBlob.cid))).toBe(true);
}

beforeAll(async () => {
  pool = openPool(await freshDatabase('gc'));
  await migrate(pool);
  dir = await mkdtemp(join(tmpdir(), 'repowalk-gc-'));
  store = new LocalBlobStore(dir);
  const made = await buildMirror({ pool, blobs: store }, [
    { did: a, records: 40 },
    { did: b, records: 60 },
    { did: c, records: 80 },
  ]);
  madeB = made[1]!;
  packOfA = await packOf(a);
  packOfC = await packOf(c);

  // Repo a at a later rev with its last ten records deleted: its old commit and the MST nodes on
  // the changed path die; its deleted records live on in b and in a's own create events.
  madeA2 = await makeRepo({ did: a, records: 30, keypair: made[0]!.keypair, rev: TID.create(1_700_000_100_000_000, 0) });
  const verified = await verifyRepo(madeA2.car, { did: a, signingKey: madeA2.signingKey });
  expect((await importRepo({ pool, blobs: store }, { repo: verified, pds: 'https://pds.invalid', handle: undefined, signingKey: madeA2.signingKey, filter: full })).kind).toBe('imported');
  // Repo c deleted at its PDS: its last twenty records are nobody's now, and its pack is all dead.
  await dropRepo(pool, c, 'deleted', { reason: 'RepoNotFound' });

  const dead = randomPack(3);
  deadPack = { id: await storeLoosePack(pool, store, dead), key: dead.key, size: dead.size };
  const counted = randomPack(2);
  countedPack = { id: await storeLoosePack(pool, store, counted, 1), key: counted.key };
  const orphan = randomPack(2);
  await putPack(store, orphan);
  orphanKey = orphan.key;

  for (const blob of [liveBlob, deadBlob]) {
    await store.put(blobKey(blob.cid), blob.bytes);
    await pool.query(`INSERT INTO blobs (cid, did, size, status, key) VALUES ($1, $2, $3, 'present', $4)`, [blob.cid, b, blob.bytes.length, blobKey(blob.cid)]);
  }
}, 180_000);

afterAll(async () => {
  await pool?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('gc', () => {
  let first: GcReport;

  it('the mirror with its garbage is intact to begin with', async () => {
    await expectIntact();
    expect(await packExists(deadPack)).toEqual({ row: true, blocks: 3, object: true });
  });

  it('within the grace period deletes nothing, and marks completely', async () => {
    first = await collectGarbage({ pool, blobs: store }, { graceSeconds: 3600, repackBelow: 1 });
    expect(first.mark).toMatchObject({ complete: true, blobsComplete: true, blobsWalked: true, repos: 3, problemCount: 0 });
    expect(first.mark.blobNodes).toBeGreaterThan(0);
    expect(first.sweep).toEqual({ packs: 0, bytes: 0, blockRows: 0 });
    expect(first.repack.packs).toBe(0);
    expect(first.blobs.rows).toBe(0);
    expect(first.orphans).toEqual({ seen: 1, deleted: 0 });
    // The counted block has a refcount and no path from a head: it is kept, and reported.
    expect(first.refcountWithoutMark).toBe(2);
    for (const p of [deadPack, countedPack, packOfC]) expect((await packExists(p)).object).toBe(true);
    expect(await store.has(orphanKey)).toBe(true);
    expect(await store.has(blobKey(deadBlob.cid))).toBe(true);
    await expectIntact();
    expect(await lastGcReport(pool)).toEqual(first);
  });

  it('a dry run past the grace period reports what it would do and changes nothing', async () => {
    await ageEverything();
    const dry = await collectGarbage({ pool, blobs: store }, { graceSeconds: 3600, repackBelow: 1, dryRun: true });
    expect(dry.sweep.packs).toBe(1);
    expect(dry.repack.packs).toBe(2);
    expect(dry.blobs.rows).toBe(1);
    expect(dry.orphans.deleted).toBe(1);
    expect(await packExists(deadPack)).toEqual({ row: true, blocks: 3, object: true });
    expect(await store.has(orphanKey)).toBe(true);
    expect(await lastGcReport(pool)).toEqual(first);
  });

  it('past the grace period deletes the dead pack, the orphan and the dead blob, repacks, and loses nothing reachable', async () => {
    const blocksIn = async (p: { id: number }) => Number((await pool.query<{ n: string }>('SELECT count(*) AS n FROM blocks WHERE pack_id = $1', [p.id])).rows[0]!.n);
    const before = { a: await blocksIn(packOfA), c: await blocksIn(packOfC), packs: await pool.query<{ id: string }>('SELECT id FROM packs') };
    // Threshold 1: every pack with any dead byte is repacked, and no pack without one.
    const report = await collectGarbage({ pool, blobs: store }, { graceSeconds: 3600, repackBelow: 1 });
    expect(report.mark.complete).toBe(true);
    // The random pack had no live block at all.
    expect(report.sweep).toEqual({ packs: 1, bytes: deadPack.size, blockRows: 3 });
    expect(await packExists(deadPack)).toEqual({ row: false, blocks: 0, object: false });
    // The pack whose blocks have a refcount is kept whole: they count as live.
    expect(await packExists(countedPack)).toEqual({ row: true, blocks: 2, object: true });
    expect(await store.has(orphanKey)).toBe(false);
    expect(report.orphans.deleted).toBe(1);
    expect(report.blobs).toEqual({ rows: 1, objects: 1, bytes: deadBlob.bytes.length });
    expect(await store.has(blobKey(deadBlob.cid))).toBe(false);
    const blobRows = await pool.query<{ cid: string }>('SELECT cid FROM blobs');
    expect(blobRows.rows.map((r) => r.cid)).toEqual([liveBlob.cid]);

    // a's first pack lost its old commit and some MST nodes; c's pack keeps only the MST nodes a's
    // new state shares with it (a's re-import found them indexed there). Both had their live
    // blocks copied into one new pack; what is left in them is dead, for the next run.
    expect(report.repack).toMatchObject({ packs: 2, newPacks: 1, skipped: [] });
    const leftA = await blocksIn(packOfA);
    const leftC = await blocksIn(packOfC);
    expect(before.a - leftA + (before.c - leftC)).toBe(report.repack.blocksMoved);
    expect(leftA).toBeGreaterThan(0);
    expect(before.c - leftC).toBeGreaterThan(0);
    for (const p of [packOfA, packOfC]) {
      const counted = await pool.query<{ n: string }>(`SELECT count(*) AS n FROM blocks WHERE pack_id = $1 AND refcount > 0`, [p.id]);
      expect(Number(counted.rows[0]!.n)).toBe(0);
      expect((await packExists(p)).object).toBe(true);
    }
    const { rows: packsNow } = await pool.query<{ id: string }>('SELECT id FROM packs');
    expect(packsNow.length).toBe(before.packs.rows.length - 1 + 1);
    await expectIntact();
  });

  it('the next run removes the packs that repacking emptied, and then there is nothing left to do', async () => {
    await ageEverything();
    const report = await collectGarbage({ pool, blobs: store }, { graceSeconds: 3600, repackBelow: 1 });
    expect(report.sweep.packs).toBe(2);
    expect(report.repack.packs).toBe(0);
    expect(await packExists(packOfA)).toEqual({ row: false, blocks: 0, object: false });
    expect(await packExists(packOfC)).toEqual({ row: false, blocks: 0, object: false });
    await expectIntact();
    await ageEverything();
    const again = await collectGarbage({ pool, blobs: store }, { graceSeconds: 3600, repackBelow: 1 });
    expect(again.sweep.packs).toBe(0);
    expect(again.repack.packs).toBe(0);
    expect(again.orphans).toEqual({ seen: 0, deleted: 0 });
    await expectIntact();
  });

  it('a repo imported while the mark runs is marked again: the blocks it reuses from a dead pack stay', async () => {
    // d's own blocks (its commit and MST nodes; its records are a's and b's) in a pack of their
    // own, dead once d is deleted; then d comes back while GC is marking.
    const [madeD] = await buildMirror({ pool, blobs: store }, [{ did: d, records: 20 }]);
    const packOfD = await packOf(d);
    const blocks = (await packExists(packOfD)).blocks;
    await dropRepo(pool, d, 'deleted', { reason: 'RepoNotFound' });
    await ageEverything();
    await pool.query(`UPDATE repos SET updated_at = now() - interval '1 day'`);
    const verified = await verifyRepo(madeD!.car, { did: d, signingKey: madeD!.signingKey });
    let reimported = false;
    const report = await collectGarbage(
      { pool, blobs: store },
      {
        graceSeconds: 3600,
        repackBelow: 1,
        onProgress: async (r) => {
          if (r.phase !== 'remark' || reimported) return;
          reimported = true;
          // Finds every block indexed (in d's dead pack) and stores none: it only references them.
          const result = await importRepo({ pool, blobs: store }, { repo: verified, pds: 'https://pds.invalid', handle: undefined, signingKey: madeD!.signingKey, filter: full });
          expect(result).toMatchObject({ kind: 'imported', newBlocks: 0 });
        },
      },
    );
    expect(reimported).toBe(true);
    expect(report.mark.remarkedRepos).toBe(1);
    expect(report.mark.complete).toBe(true);
    // Whole: neither swept nor repacked (without the second mark its MST nodes would look dead).
    expect(await packExists(packOfD)).toEqual({ row: true, blocks, object: true });
    expect(report.repack.packs).toBe(0);
    expect(await unreadableBlocks(pool, store, [madeD!.car])).toEqual([]);
    await expectIntact();
  });

  it('an incomplete mark sweeps nothing', async () => {
    // b's head commit loses its index row: nothing under it can be marked.
    const { rows } = await pool.query<{ head_cid: Buffer; refcount: string; pack_id: string; byte_offset: string; byte_length: number }>(
      `SELECT r.head_cid, b.refcount, b.pack_id, b.byte_offset, b.byte_length FROM repos r JOIN blocks b ON b.cid = r.head_cid WHERE r.did = $1`,
      [b],
    );
    const head = rows[0]!;
    const dead = randomPack(1);
    const id = await storeLoosePack(pool, store, dead);
    await pool.query(`UPDATE packs SET created_at = now() - interval '2 days' WHERE id = $1`, [id]);
    await pool.query('DELETE FROM blocks WHERE cid = $1', [head.head_cid]);
    try {
      const report = await collectGarbage({ pool, blobs: store }, { graceSeconds: 3600, repackBelow: 1 });
      expect(report.mark.complete).toBe(false);
      expect(report.mark.problems[0]).toMatchObject({ nodeType: 'Repo', key: b });
      expect(report.skipped.join('\n')).toMatch(/sweep and repack: the mark is incomplete/);
      expect(report.sweep.packs).toBe(0);
      expect((await packExists({ id, key: dead.key })).object).toBe(true);
    } finally {
      await pool.query(
        'INSERT INTO blocks (cid, pack_id, byte_offset, byte_length, refcount) VALUES ($1, $2, $3, $4, $5)',
        [head.head_cid, head.pack_id, head.byte_offset, head.byte_length, head.refcount],
      );
    }
    await expectIntact();
  });
});
