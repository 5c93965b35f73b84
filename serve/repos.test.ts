/**
 * `findRepo`: a repo named by its DID or by its handle, as XRPC's `repo` parameter allows. A
 * handle is matched whatever its case, an active repo before a gone one that held the handle
 * before it, and through the index on `lower(handle)` (migration 0011), not a pass over `repos`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { freshDatabase } from '../test/stack.ts';
import { openPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { findRepo, servableRepo } from './repos.ts';

let pool: pg.Pool;

beforeAll(async () => {
  pool = openPool(await freshDatabase('serve_repos'));
  await migrate(pool);
  await pool.query(
    `INSERT INTO repos (did, status, gone_status, handle) VALUES
       ('did:plc:aaaaaaaaaaaaaaaaaaaaaaaa', 'gone', 'deactivated', 'alice.test'),
       ('did:plc:bbbbbbbbbbbbbbbbbbbbbbbb', 'active', NULL, 'Alice.Test'),
       ('did:plc:cccccccccccccccccccccccc', 'active', NULL, 'carol.test'),
       ('did:plc:dddddddddddddddddddddddd', 'active', NULL, NULL)`,
  );
}, 60_000);

afterAll(async () => {
  await pool?.end();
});

describe('findRepo', () => {
  it('finds a repo by DID, and by handle in any case, the active holder first', async () => {
    expect((await findRepo(pool, 'did:plc:cccccccccccccccccccccccc'))?.handle).toBe('carol.test');
    expect((await findRepo(pool, 'CAROL.test'))?.did).toBe('did:plc:cccccccccccccccccccccccc');
    expect((await findRepo(pool, 'alice.test'))?.did).toBe('did:plc:bbbbbbbbbbbbbbbbbbbbbbbb');
    expect(await findRepo(pool, 'nobody.test')).toBeNull();
    // A repo without a handle is not found by some other string.
    expect(await findRepo(pool, '')).toBeNull();
  });

  it('answers a handle it does not hold as the PDS would: RepoNotFound', async () => {
    await expect(servableRepo(pool, 'nobody.test')).rejects.toMatchObject({ error: 'RepoNotFound' });
  });

  it('looks a handle up through its index, not by reading every repo', async () => {
    // The statement findRepo sends for a handle.
    const sent: [string, unknown[]][] = [];
    const query = pool.query.bind(pool) as (...a: unknown[]) => Promise<unknown>;
    (pool as unknown as { query: typeof query }).query = (...a: unknown[]) => {
      sent.push([a[0] as string, a[1] as unknown[]]);
      return query(...a);
    };
    try {
      await findRepo(pool, 'alice.test');
    } finally {
      (pool as unknown as { query: typeof query }).query = query;
    }
    expect(sent).toHaveLength(1);
    const c = await pool.connect();
    try {
      // The table is small, so the planner would read it whole whatever the indexes: forbid that.
      await c.query('BEGIN; SET LOCAL enable_seqscan = off');
      const { rows } = await c.query(`EXPLAIN (COSTS OFF) ${sent[0]![0]}`, sent[0]![1]);
      const plan = rows.map((r: Record<string, string>) => r['QUERY PLAN']).join('\n');
      expect(plan).toMatch(/repos_handle_lower/);
      await c.query('ROLLBACK');
    } finally {
      c.release();
    }
  });
});
