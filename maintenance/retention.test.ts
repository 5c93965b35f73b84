/**
 * Retention on a real mirror: a repo imported in ephemeral mode (events with an expiry, no record
 * index) beside a full-mode repo sharing record blocks with it. Exactly the expired events go,
 * and every block's refcount still equals the references stored rows hold.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { freshDatabase } from '../test/stack.ts';
import { openPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { importRepo } from '../backfill/import.ts';
import { verifyRepo } from '../atproto/verify.ts';
import { makeRepoCached } from '../atproto/testing/make-repo.ts';
import { buildMirror, testDids } from '../test/mirror.ts';
import { countExpiredEvents, trimExpiredEvents } from './retention.ts';
import { refcountMismatches } from '../test/gc-fixtures.ts';

let pool: pg.Pool;
let dir: string;
const [full, ephemeral] = testDids('retention', 2) as [string, string];

beforeAll(async () => {
  pool = openPool(await freshDatabase('retention'));
  await migrate(pool);
  dir = await mkdtemp(join(tmpdir(), 'repowalk-retention-'));
  const blobs = new LocalBlobStore(dir);
  await buildMirror({ pool, blobs }, [{ did: full, records: 50 }]);
  const repo = await makeRepoCached({ did: ephemeral, records: 40 });
  const verified = await verifyRepo(repo.car, { did: repo.did, signingKey: repo.signingKey });
  const result = await importRepo(
    { pool, blobs },
    { repo: verified, pds: 'https://pds.invalid', handle: undefined, signingKey: repo.signingKey, filter: { mode: 'full', include: [], exclude: [], signal: [] }, ephemeralRetentionSeconds: 3600 },
  );
  expect(result.kind).toBe('imported');
}, 120_000);

afterAll(async () => {
  await pool?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('retention', () => {
  it('trims exactly the expired events, in batches, and keeps refcounts right', async () => {
    expect(await refcountMismatches(pool)).toBe(0);
    const { rows: before } = await pool.query<{ id: string; did: string; expires_at: Date | null }>('SELECT id, did, expires_at FROM events ORDER BY id');
    const eph = before.filter((e) => e.did === ephemeral);
    expect(eph.length).toBe(40);
    expect(eph.every((e) => e.expires_at !== null)).toBe(true);
    expect(before.filter((e) => e.did === full).every((e) => e.expires_at === null)).toBe(true);

    // Every other ephemeral event has expired; one expires exactly now; the rest an hour from now.
    const expired = eph.filter((_, i) => i % 2 === 0).map((e) => e.id);
    await pool.query(`UPDATE events SET expires_at = now() - interval '1 minute' WHERE id = ANY($1::bigint[])`, [expired]);
    const asOf = new Date();
    expect(await countExpiredEvents(pool, asOf)).toBe(expired.length);

    const batches: number[] = [];
    const result = await trimExpiredEvents(pool, { asOf, batchSize: 6, onBatch: (p) => void batches.push(p.trimmed) });
    expect(result).toMatchObject({ trimmed: expired.length, refsDropped: expired.length, done: true });
    expect(result.batches).toBe(Math.ceil((expired.length + 1) / 6));
    expect(batches[batches.length - 1]).toBe(expired.length);

    const { rows: after } = await pool.query<{ id: string }>('SELECT id FROM events ORDER BY id');
    expect(after.map((e) => e.id)).toEqual(before.map((e) => e.id).filter((id) => !expired.includes(id)));
    expect(await refcountMismatches(pool)).toBe(0);

    // Nothing left to trim: a second run is a no-op.
    expect(await trimExpiredEvents(pool, { batchSize: 6 })).toMatchObject({ trimmed: 0, batches: 1, done: true });
  });

  it('stops after maxBatches with the rest left for the next run', async () => {
    await pool.query(`UPDATE events SET expires_at = now() - interval '1 second' WHERE did = $1`, [ephemeral]);
    const left = await countExpiredEvents(pool);
    expect(left).toBe(20);
    const first = await trimExpiredEvents(pool, { batchSize: 5, maxBatches: 2 });
    expect(first).toMatchObject({ trimmed: 10, batches: 2, done: false });
    const rest = await trimExpiredEvents(pool, { batchSize: 5 });
    expect(rest).toMatchObject({ trimmed: 10, done: true });
    expect(await countExpiredEvents(pool)).toBe(0);
    expect(await refcountMismatches(pool)).toBe(0);
    // The full-mode repo's events, which never expire, are all there.
    const { rows } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM events WHERE did = $1', [full]);
    expect(Number(rows[0]!.n)).toBe(50);
  });
});
