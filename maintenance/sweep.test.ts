/**
 * Which repos the resync sweep and the gone re-check see, paged; and the stats job's counts.
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
import { markGone, markResync } from '../backfill/repo-state.ts';
import { buildMirror, testDids } from '../test/mirror.ts';
import { dueRepos, type SweepKind } from './sweep.ts';
import { collectStats, readStats, storeStats } from './stats.ts';

let pool: pg.Pool;
let dir: string;
const dids = testDids('sweep', 12);
const past = new Date(Date.now() - 60_000);
const future = new Date(Date.now() + 3600_000);

beforeAll(async () => {
  pool = openPool(await freshDatabase('sweep'));
  await migrate(pool);
  dir = await mkdtemp(join(tmpdir(), 'repowalk-sweep-'));
  // 0–1 active and healthy, 2 active but waiting in resync (an older good copy), 3–6 in error and
  // due, 7 in error but not yet due, 8–9 gone and due, 10 gone not due, 11 deleted.
  await buildMirror({ pool, blobs: new LocalBlobStore(dir) }, [0, 1, 2].map((i) => ({ did: dids[i]!, records: 10 })));
  await markResync(pool, dids[2]!, { kind: 'transport', count: 3, nextRetryAt: past, error: 'reset' });
  for (const i of [3, 4, 5, 6]) await markResync(pool, dids[i]!, { kind: i === 3 ? 'rate-limited' : 'error', count: i, nextRetryAt: past, error: 'bad' });
  await markResync(pool, dids[7]!, { kind: 'error', count: 1, nextRetryAt: future, error: 'bad' });
  for (const i of [8, 9]) await markGone(pool, dids[i]!, { status: 'deactivated', recheckAt: past, detail: 'RepoDeactivated' });
  await markGone(pool, dids[10]!, { status: 'takendown', recheckAt: future, detail: 'RepoTakendown' });
  await pool.query(`INSERT INTO repos (did, status) VALUES ($1, 'deleted')`, [dids[11]]);
}, 120_000);

afterAll(async () => {
  await pool?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function all(kind: SweepKind, limit: number): Promise<{ dids: string[]; pages: number; counts: number[] }> {
  const out: string[] = [];
  const counts: number[] = [];
  let after: string | undefined;
  let pages = 0;
  do {
    const page = await dueRepos(pool, { kind, asOf: new Date(), after, limit });
    pages++;
    out.push(...page.repos.map((r) => r.did));
    counts.push(...page.repos.map((r) => r.resyncCount));
    after = page.cursor;
  } while (after !== undefined);
  return { dids: out, pages, counts };
}

describe('due repos', () => {
  it('the resync sweep sees the repos in resync whose retry time has passed, in DID order, paged', async () => {
    const r = await all('resync', 2);
    expect(r.dids).toEqual([2, 3, 4, 5, 6].map((i) => dids[i]));
    expect(r.counts).toEqual([3, 3, 4, 5, 6]);
    expect(r.pages).toBe(3);
    // A page exactly as long as what is left has no cursor: no empty last page.
    expect((await all('resync', 5)).pages).toBe(1);
  });

  it('the gone re-check sees the gone repos whose re-check time has passed', async () => {
    expect((await all('gone', 10)).dids).toEqual([dids[8], dids[9]]);
  });

  it('a fixed asOf: a repo whose retry moves during the sweep is not seen twice', async () => {
    const asOf = new Date();
    const first = await dueRepos(pool, { kind: 'resync', asOf, limit: 2 });
    await markResync(pool, dids[5]!, { kind: 'error', count: 6, nextRetryAt: past, error: 'again' });
    const second = await dueRepos(pool, { kind: 'resync', asOf, after: first.cursor, limit: 10 });
    expect([...first.repos, ...second.repos].map((r) => r.did)).toEqual([2, 3, 4, 5, 6].map((i) => dids[i]));
  });
});

describe('stats', () => {
  it('counts repos by state, blocks, packs and bytes, and keeps them in job_state', async () => {
    expect(await readStats(pool)).toBeUndefined();
    const s = await collectStats(pool);
    expect(s.repos).toMatchObject({
      total: 12,
      byStatus: { active: 3, error: 5, gone: 3, deleted: 1 },
      byGoneStatus: { deactivated: 2, takendown: 1 },
      byResyncKind: { 'rate-limited': 1, transport: 1, error: 4 },
      due: 7,
    });
    expect(s.records).toBe(30);
    const { rows } = await pool.query<{ blocks: string; bytes: string; packs: string; pack_bytes: string }>(
      'SELECT (SELECT count(*) FROM blocks) AS blocks, (SELECT sum(byte_length) FROM blocks) AS bytes, (SELECT count(*) FROM packs) AS packs, (SELECT sum(size_bytes) FROM packs) AS pack_bytes',
    );
    expect(s.blocks).toEqual({ count: Number(rows[0]!.blocks), bytes: Number(rows[0]!.bytes) });
    expect(s.packs).toEqual({ count: Number(rows[0]!.packs), bytes: Number(rows[0]!.pack_bytes) });
    // The three repos hold the same ten records: one block each, plus their commits and MST nodes.
    expect(s.blocks.count).toBeGreaterThan(13);
    expect(s.events.count).toBeGreaterThanOrEqual(30);
    expect(s.healQueue.open).toBe(0);
    await storeStats(pool, s);
    expect(await readStats(pool)).toEqual(s);
    expect(s.blocks.sampledPercent).toBeUndefined();
    expect(s.events.sampledPercent).toBeUndefined();
  });

  it('counts a table past exactBelow rows from a sample of its pages, scaled up', async () => {
    const before = await collectStats(pool);
    // 40,000 events more (account events: no record, no block), half of them expired.
    await pool.query(
      `INSERT INTO events (did, kind, origin, expires_at)
       SELECT 'did:plc:statssample000000000000', 'account', 'live', CASE WHEN i % 2 = 0 THEN now() - interval '1 day' END FROM generate_series(1, 40000) AS i`,
    );
    await pool.query('ANALYZE events');
    const total = before.events.count + 40_000;
    // Under the default threshold: exact, as before.
    const exact = await collectStats(pool);
    expect(exact.events).toEqual({ count: total, expiring: before.events.expiring + 20_000, expired: before.events.expired + 20_000 });
    // Past it: about 10,000 rows' worth of pages read, the counts scaled back up.
    const s = await collectStats(pool, { exactBelow: 10_000 });
    expect(s.events.sampledPercent).toBeGreaterThan(15);
    expect(s.events.sampledPercent).toBeLessThan(35);
    expect(s.events.count).toBeGreaterThan(total * 0.5);
    expect(s.events.count).toBeLessThan(total * 1.5);
    expect(s.events.expired).toBeGreaterThan(20_000 * 0.5);
    expect(s.events.expired).toBeLessThan(20_000 * 1.5);
    // The small tables stay exact.
    expect(s.blocks).toEqual(exact.blocks);
    expect(s.repos).toEqual(exact.repos);
  });
});
