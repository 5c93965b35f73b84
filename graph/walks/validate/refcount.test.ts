/**
 * The refcount check's comparison in the Repo read (`refcountMismatchesInPacks`), on repos that
 * one store batch put in one pack, as backfill does: each block's `records` and `events` rows are
 * counted, and a head is counted by the repos read with the pack. A repo read alone (batches of
 * one) shares its pack with the others' heads, which must not be reported against it; a fault in
 * a head, a record or an event's count is found under the repo that reaches the block, from the
 * Repo read (no lookup per block).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { freshDatabase } from '../../../test/stack.ts';
import { openPool } from '../../../storage/db/pool.ts';
import { migrate } from '../../../storage/db/migrate.ts';
import { LocalBlobStore } from '../../../storage/blobstore/local.ts';
import { testDids } from '../../../test/mirror.ts';
import { makeRepoCached } from '../../../atproto/testing/make-repo.ts';
import { verifyRepo } from '../../../atproto/verify.ts';
import { storeBatch } from '../../../ingest/store.ts';
import { recordFilter } from '../../../backfill/import.ts';
import * as CID from '@atcute/cid';
import { MemoryFindings, type Finding } from '../../findings.ts';
import type { Node } from '../../nodes.ts';
import { runWalk } from '../../run.ts';
import { refcountMismatchesInPacks } from '../../../storage/validate-queries.ts';

let pool: pg.Pool;
let dir: string;
let store: LocalBlobStore;
const dids = testDids('refcountpacks', 4);
const roots: Node[] = dids.map((did) => ({ type: 'Repo', did }));
let packId: number;

beforeAll(async () => {
  pool = openPool(await freshDatabase('graph_validate_refcount'));
  await migrate(pool);
  dir = await mkdtemp(join(tmpdir(), 'repowalk-refcount-'));
  store = new LocalBlobStore(dir);
  const made = await Promise.all(dids.map((did, i) => makeRepoCached({ did, records: 12 + 3 * i })));
  const changes = await Promise.all(
    made.map(async (m) => ({ kind: 'snapshot' as const, repo: await verifyRepo(m.car, { did: m.did, signingKey: m.signingKey }), pds: 'https://pds.invalid', handle: undefined, signingKey: m.signingKey })),
  );
  await storeBatch({ pool, blobs: store }, changes, { filter: recordFilter({ mode: 'full', include: [], exclude: [], signal: [] }), origin: 'backfill' });
  const { rows } = await pool.query<{ pack_id: string; n: string }>(
    'SELECT b.pack_id, count(*) AS n FROM repos r JOIN blocks b ON b.cid = r.head_cid WHERE r.did = ANY($1) GROUP BY b.pack_id',
    [dids],
  );
  // Every head in the batch's one pack.
  expect(rows.map((r) => Number(r.n))).toEqual([dids.length]);
  packId = Number(rows[0]!.pack_id);
}, 120_000);

afterAll(async () => {
  await pool?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** The validate walk of `walkRoots` with only the refcount check; counts the per-block comparisons it asks. */
async function validate(walkRoots: Node[], maxRepos: number): Promise<{ findings: Finding[]; perBlock: number }> {
  const query = pool.query.bind(pool) as (...a: unknown[]) => Promise<unknown>;
  let perBlock = 0;
  (pool as unknown as { query: typeof query }).query = (...a: unknown[]) => {
    if (typeof a[0] === 'string' && a[0].includes('FROM records x WHERE x.cid = c.cid')) perBlock++;
    return query(...a);
  };
  try {
    const findings = new MemoryFindings();
    await runWalk({ pool, store }, { type: 'validate', validate: { checks: ['refcount'] } }, walkRoots, { findings, repoBatch: { maxRepos, readAhead: false } });
    return { findings: findings.findings, perBlock };
  } finally {
    (pool as unknown as { query: typeof query }).query = query;
  }
}

const cidString = (b: Uint8Array) => CID.toString(CID.decode(b));
const keys = (findings: Finding[]) => findings.map((f) => [f.check, f.nodeType, f.key, f.detail]).sort();

async function headOf(did: string): Promise<Buffer> {
  const { rows } = await pool.query<{ head_cid: Buffer }>('SELECT head_cid FROM repos WHERE did = $1', [did]);
  return rows[0]!.head_cid;
}

async function recordOf(did: string): Promise<{ collection: string; rkey: string; cid: Buffer }> {
  const { rows } = await pool.query(
    `SELECT r.collection, r.rkey, r.cid FROM records r WHERE r.did = $1 AND NOT EXISTS (SELECT 1 FROM records o WHERE o.cid = r.cid AND o.did <> r.did) ORDER BY r.rkey LIMIT 1`,
    [did],
  );
  return rows[0]!;
}

describe('refcount, repos sharing one pack', () => {
  it('finds nothing on the intact pack, walked a repo a batch and all in one, with no lookup per block', async () => {
    for (const maxRepos of [1, 2, dids.length]) {
      const { findings, perBlock } = await validate(roots, maxRepos);
      expect(findings).toEqual([]);
      expect(perBlock).toBe(0);
    }
    // A repo walked alone: the other repos' heads in its pack are not its findings.
    expect((await validate([roots[2]!], 1)).findings).toEqual([]);
  });

  it('the comparison counts heads among the repos it is given: the others in the pack are disagreements', async () => {
    const all = await refcountMismatchesInPacks(pool, [packId], [], dids);
    expect(all).toEqual([]);
    const one = await refcountMismatchesInPacks(pool, [packId], [], [dids[0]!]);
    const heads = await Promise.all(dids.slice(1).map(headOf));
    expect(one.map((m) => [cidString(m.cid), m.refcount, m.refs]).sort()).toEqual(heads.map((h) => [cidString(h), 1, 0]).sort());
  });

  it('the comparison by lookups, by joins and by counts over whole tables gives the same answer', async () => {
    const head = await headOf(dids[1]!);
    const rec = await recordOf(dids[3]!);
    await pool.query('UPDATE blocks SET refcount = refcount + 1 WHERE cid = ANY($1::bytea[])', [[head, rec.cid]]);
    try {
      const norm = (ms: { cid: Buffer; refcount: number; refs: number }[]) => ms.map((m) => [cidString(m.cid), m.refcount, m.refs]).sort();
      for (const of of [dids, [dids[0]!], [dids[1]!, dids[3]!]]) {
        const lookups = await refcountMismatchesInPacks(pool, [packId], [], of);
        for (const plan of ['join', 'aggregate'] as const) expect(norm(await refcountMismatchesInPacks(pool, [packId], [], of, { plan }))).toEqual(norm(lookups));
        expect(norm(lookups)).toContainEqual([cidString(rec.cid), 3, 2]);
      }
      for (const plan of ['join', 'aggregate'] as const) expect(norm(await refcountMismatchesInPacks(pool, [packId], [], dids, { plan }))).toEqual(norm(await refcountMismatchesInPacks(pool, [packId], [], dids)));
      // Blocks outside the packs too (a record named by its CID, the head's pack left out).
      for (const plan of ['lookup', 'join', 'aggregate'] as const) {
        expect(norm(await refcountMismatchesInPacks(pool, [], [rec.cid, head, rec.cid], dids, { plan }))).toEqual([[cidString(head), 2, 1], [cidString(rec.cid), 3, 2]].sort());
      }
      expect(norm(await refcountMismatchesInPacks(pool, [packId], [], dids))).toContainEqual([cidString(head), 2, 1]);
    } finally {
      await pool.query('UPDATE blocks SET refcount = refcount - 1 WHERE cid = ANY($1::bytea[])', [[head, rec.cid]]);
    }
  });

  it('a head whose refcount is off is found under its repo, however the repos are batched', async () => {
    const head = await headOf(dids[1]!);
    for (const [delta, detail] of [
      [-1, 'refcount is 0, but 1 stored rows reference the block'],
      [1, 'refcount is 2, but 1 stored rows reference the block'],
    ] as const) {
      await pool.query('UPDATE blocks SET refcount = refcount + $2 WHERE cid = $1', [head, delta]);
      try {
        for (const maxRepos of [1, dids.length]) {
          const { findings, perBlock } = await validate(roots, maxRepos);
          expect(keys(findings)).toEqual([['refcount', 'Commit', cidString(head), detail]]);
          expect(findings[0]!.route[0]!.node).toBe(`Repo:${dids[1]}`);
          // The head's count in the Repo read (its rows and its own repo's head) disagrees, so it
          // is counted again mirror-wide, once, with every repo's head: another repo's head
          // could name it too, and the finding reports the whole count.
          expect(perBlock).toBe(1);
        }
      } finally {
        await pool.query('UPDATE blocks SET refcount = refcount - $2 WHERE cid = $1', [head, delta]);
      }
    }
  });

  it('a record block whose refcount is off is found', async () => {
    const rec = await recordOf(dids[3]!);
    await pool.query('UPDATE blocks SET refcount = refcount - 1 WHERE cid = $1', [rec.cid]);
    try {
      for (const maxRepos of [1, dids.length]) {
        const { findings, perBlock } = await validate(roots, maxRepos);
        // The record row and the backfill's create event.
        expect(keys(findings)).toEqual([['refcount', 'Record', cidString(rec.cid), 'refcount is 1, but 2 stored rows reference the block']]);
        expect(perBlock).toBe(0);
      }
    } finally {
      await pool.query('UPDATE blocks SET refcount = refcount + 1 WHERE cid = $1', [rec.cid]);
    }
  });

  it('an event naming a block is counted: one the refcount leaves out is found, and counted in is not', async () => {
    const rec = await recordOf(dids[3]!);
    const { rows } = await pool.query<{ id: string }>(
      `INSERT INTO events (did, kind, collection, rkey, cid, rev, origin) VALUES ($1, 'update', $2, $3, $4, 'x', 'live') RETURNING id`,
      [dids[3], rec.collection, rec.rkey, rec.cid],
    );
    try {
      const { findings, perBlock } = await validate(roots, dids.length);
      expect(keys(findings)).toEqual([['refcount', 'Record', cidString(rec.cid), 'refcount is 2, but 3 stored rows reference the block']]);
      expect(perBlock).toBe(0);
      await pool.query('UPDATE blocks SET refcount = refcount + 1 WHERE cid = $1', [rec.cid]);
      expect((await validate(roots, 1)).findings).toEqual([]);
    } finally {
      await pool.query('DELETE FROM events WHERE id = $1', [rows[0]!.id]);
      await pool.query('UPDATE blocks SET refcount = 2 WHERE cid = $1', [rec.cid]);
    }
    expect((await validate(roots, dids.length)).findings).toEqual([]);
  });

  it('a block that is another repo\'s head too is not a finding of a repo read without that one', async () => {
    // Repo 0 reaches repo 1's commit (an event of its own names it), and the refcount counts
    // both: the head and the event. Read alone, repo 0's batch does not count repo 1's head.
    const head = await headOf(dids[1]!);
    const { rows } = await pool.query<{ id: string }>(
      `INSERT INTO events (did, kind, collection, rkey, cid, rev, origin) VALUES ($1, 'update', 'app.bsky.feed.post', '3zzzzzzzzzzzz', $2, 'x', 'live') RETURNING id`,
      [dids[0], head],
    );
    await pool.query('UPDATE blocks SET refcount = refcount + 1 WHERE cid = $1', [head]);
    try {
      for (const maxRepos of [1, dids.length]) expect((await validate([roots[0]!], maxRepos)).findings).toEqual([]);
      expect((await validate(roots, 1)).findings).toEqual([]);
      // One more than both: found, from repo 0's read as from repo 1's.
      await pool.query('UPDATE blocks SET refcount = refcount + 1 WHERE cid = $1', [head]);
      const { findings } = await validate([roots[0]!], 1);
      expect(keys(findings)).toEqual([[expect.any(String), expect.any(String), cidString(head), 'refcount is 3, but 2 stored rows reference the block']]);
    } finally {
      await pool.query('DELETE FROM events WHERE id = $1', [rows[0]!.id]);
      await pool.query('UPDATE blocks SET refcount = 1 WHERE cid = $1', [head]);
    }
    expect((await validate(roots, dids.length)).findings).toEqual([]);
  });
});
