/**
 * Migration 0009 (byte order for the store's text keys) on a server whose default collation is a
 * language's, as a DATABASE_URL server's often is: a database made with ICU en-US holds rows
 * written under migrations 0001-0008, then migrates. The rows stay, the keys compare in byte
 * order, and the lookups and listRecords' paging still go through the indexes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { testStack } from '../../test/stack.ts';
import { MIGRATIONS_DIR, migrate } from './migrate.ts';
import { openPool } from './pool.ts';

// Orders that a language collation and byte order disagree on: case, and punctuation.
const RKEYS = ['a', 'B', 'b', 'Z', '_x', '~y', '3k2', 'A-b'];
const BYTE_ORDER = [...RKEYS].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
const DID = 'did:plc:bytesorder0000000000000';

let admin: pg.Client;
let pool: pg.Pool;
let name: string;
let dir: string;

beforeAll(async () => {
  admin = new pg.Client({ connectionString: testStack().databaseUrl });
  await admin.connect();
  name = `byte_order_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  await admin.query(`CREATE DATABASE ${name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'`);
  const url = new URL(testStack().databaseUrl);
  url.pathname = `/${name}`;
  pool = openPool(url.toString());
  // The migrations before 0009, as a database made by an earlier release holds them.
  dir = await mkdtemp(join(tmpdir(), 'repowalk-migrations-'));
  await cp(MIGRATIONS_DIR, dir, { recursive: true });
  for (const f of await readdir(dir)) if (Number(f.slice(0, 4)) >= 9) await rm(join(dir, f));
  await migrate(pool, { dir });
});

afterAll(async () => {
  await pool?.end();
  await admin?.query(`DROP DATABASE IF EXISTS ${name}`);
  await admin?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const rkeysInOrder = async () => (await pool.query<{ rkey: string }>('SELECT rkey FROM records WHERE did = $1 AND collection = $2 ORDER BY rkey', [DID, 'app.bsky.feed.post'])).rows.map((r) => r.rkey);

describe('migration 0009 on a database whose default collation is en-US', () => {
  it('keeps the rows, orders the keys by their bytes, and keeps the lookups on the indexes', async () => {
    await pool.query(`INSERT INTO repos (did, status, rev, head_cid, data_cid) VALUES ($1, 'active', 'r1', '\\x01', '\\x02')`, [DID]);
    await pool.query(`INSERT INTO repo_car_plans (did, head_cid, pack_count, pieces) VALUES ($1, '\\x01', 0, '\\x')`, [DID]);
    for (const [i, rkey] of RKEYS.entries()) {
      await pool.query('INSERT INTO records (did, collection, rkey, cid) VALUES ($1, $2, $3, $4)', [DID, 'app.bsky.feed.post', rkey, Buffer.from([i])]);
      await pool.query(`INSERT INTO events (did, kind, collection, rkey, cid, origin) VALUES ($1, 'create', $2, $3, $4, 'backfill')`, [DID, 'app.bsky.feed.post', rkey, Buffer.from([i])]);
    }
    await pool.query(`INSERT INTO collection_counts (did, collection, count) VALUES ($1, 'app.bsky.feed.post', $2)`, [DID, RKEYS.length]);
    // Under the language's collation the order is not the bytes' (this is what the migration fixes).
    expect(await rkeysInOrder()).not.toEqual(BYTE_ORDER);

    const { applied } = await migrate(pool);
    expect(applied.some((f) => f.startsWith('0009_'))).toBe(true);

    expect(await rkeysInOrder()).toEqual(BYTE_ORDER);
    // listRecords' page after a cursor, forward: byte order, through the primary key.
    const after = await pool.query<{ rkey: string }>('SELECT rkey FROM records WHERE did = $1 AND collection = $2 AND rkey > $3 ORDER BY rkey LIMIT 3', [DID, 'app.bsky.feed.post', 'B']);
    expect(after.rows.map((r) => r.rkey)).toEqual(BYTE_ORDER.slice(BYTE_ORDER.indexOf('B') + 1, BYTE_ORDER.indexOf('B') + 4));
    const c = await pool.connect();
    try {
      await c.query('BEGIN; SET LOCAL enable_seqscan = off');
      const plan = (q: string, v: unknown[]) => c.query(`EXPLAIN (COSTS OFF) ${q}`, v).then((r) => r.rows.map((x) => x['QUERY PLAN']).join('\n'));
      expect(await plan('SELECT cid FROM records WHERE did = $1 AND collection = $2 AND rkey > $3 ORDER BY rkey', [DID, 'x', 'B'])).toMatch(/Index Scan using records_pkey/);
      expect(await plan(`SELECT r.cid FROM records r JOIN unnest($1::text[], $2::text[], $3::text[]) AS t(d, c, k) ON r.did = t.d AND r.collection = t.c AND r.rkey = t.k`, [[DID], ['x'], ['a']])).toMatch(/records_pkey/);
      expect(await plan('SELECT id FROM events WHERE did = ANY($1::text[])', [[DID]])).toMatch(/events_did_id/);
      expect(await plan('SELECT count FROM collection_counts WHERE did = $1', [DID])).toMatch(/collection_counts_pkey/);
      await c.query('ROLLBACK');
    } finally {
      c.release();
    }

    // Nothing was lost, and every key column is in byte order.
    const counts = await pool.query(`SELECT (SELECT count(*) FROM records)::int AS records, (SELECT count(*) FROM events)::int AS events,
      (SELECT count(*) FROM repo_car_plans)::int AS plans, (SELECT count FROM collection_counts)::int AS counted`);
    expect(counts.rows[0]).toEqual({ records: RKEYS.length, events: RKEYS.length, plans: 1, counted: RKEYS.length });
    const collations = await pool.query<{ col: string; collation: string | null }>(
      `SELECT table_name || '.' || column_name AS col, collation_name AS collation FROM information_schema.columns
       WHERE table_schema = 'public' AND (table_name, column_name) IN (('repos', 'did'), ('records', 'did'), ('records', 'collection'), ('records', 'rkey'),
         ('collection_counts', 'did'), ('collection_counts', 'collection'), ('events', 'did'), ('events', 'collection'), ('events', 'rkey'),
         ('repo_car_plans', 'did'), ('repo_car_plan_packs', 'did'))
       ORDER BY 1`,
    );
    expect(collations.rows).toHaveLength(11);
    for (const r of collations.rows) expect(r, r.col).toMatchObject({ collation: 'C' });
    // The cascade from repos still reaches the plans.
    await pool.query('DELETE FROM repos WHERE did = $1', [DID]);
    expect((await pool.query('SELECT count(*)::int AS n FROM repo_car_plans')).rows[0]).toEqual({ n: 0 });
  });
});
