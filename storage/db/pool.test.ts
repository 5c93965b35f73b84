import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer } from 'node:net';
import type pg from 'pg';
import { freshDatabase } from '../../test/stack.ts';
import { DatabaseConnectError } from './errors.ts';
import { connectPool, openPool, redactUrl, withTransaction } from './pool.ts';

describe('redactUrl', () => {
  it('masks the password in the authority and in a query parameter', () => {
    expect(redactUrl('postgres://repowalk:s3cret@db.example:5432/mirror')).toBe('postgres://repowalk:***@db.example:5432/mirror');
    expect(redactUrl('postgres://db.example/mirror?user=a&password=s3cret&sslmode=require')).toBe(
      'postgres://db.example/mirror?user=a&password=***&sslmode=require',
    );
  });

  it('leaves a URL without a password alone', () => {
    expect(redactUrl('postgres://postgres@127.0.0.1:5432/postgres')).toBe('postgres://postgres@127.0.0.1:5432/postgres');
  });

  it('masks user:password@ in a string that does not parse as a URL', () => {
    const out = redactUrl('postgres://user:p@ss wörd@[bad');
    expect(out).not.toContain('p@ss');
    expect(out).toContain('***');
  });
});

describe('connectPool', () => {
  it('fails with the URL redacted when Postgres is unreachable', async () => {
    // A port that is certainly closed: bind one, then free it.
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const err = await connectPool(`postgres://repowalk:hunter2@127.0.0.1:${port}/x`, { connectionTimeoutMs: 2000 }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DatabaseConnectError);
    expect((err as Error).message).toContain(`repowalk:***@127.0.0.1:${port}`);
    expect((err as Error).message).not.toContain('hunter2');
  });
});

describe('openPool and withTransaction', () => {
  let pool: pg.Pool;
  beforeAll(async () => {
    pool = openPool(await freshDatabase('pool'), { statementTimeoutMs: 500 });
    await pool.query('CREATE TABLE t (x int PRIMARY KEY)');
  });
  afterAll(async () => {
    await pool.end();
  });

  it('names the application and applies the statement timeout', async () => {
    const { rows } = await pool.query(`SELECT current_setting('application_name') AS app, current_setting('statement_timeout') AS st`);
    expect(rows[0]).toEqual({ app: 'repowalk', st: '500ms' });
    await expect(pool.query('SELECT pg_sleep(2)')).rejects.toThrow(/statement timeout/);
  });

  it('commits when the function resolves', async () => {
    const out = await withTransaction(pool, async (c) => {
      await c.query('INSERT INTO t VALUES (1)');
      return 'done';
    });
    expect(out).toBe('done');
    expect((await pool.query('SELECT x FROM t')).rows).toEqual([{ x: 1 }]);
  });

  it('rolls back and rethrows when the function throws', async () => {
    const boom = new Error('boom');
    await expect(
      withTransaction(pool, async (c) => {
        await c.query('INSERT INTO t VALUES (2)');
        throw boom;
      }),
    ).rejects.toBe(boom);
    await expect(withTransaction(pool, (c) => c.query('INSERT INTO t VALUES (1)'))).rejects.toThrow(/duplicate key/);
    expect((await pool.query('SELECT x FROM t ORDER BY x')).rows).toEqual([{ x: 1 }]);
    // The connections went back to the pool in a usable state.
    expect((await pool.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('applies settings for the transaction only, and refuses anything but a plain name and value', async () => {
    const read = (c: Pick<pg.ClientBase, 'query'>) => c.query(`SELECT current_setting('enable_hashjoin') AS hj, current_setting('enable_seqscan') AS ss`).then((r) => r.rows[0]);
    const inside = await withTransaction(pool, read, { settings: { enable_hashjoin: 'off', enable_seqscan: 'off' } });
    expect(inside).toEqual({ hj: 'off', ss: 'off' });
    // Every connection of the pool is back to the server's defaults afterwards.
    const after = await Promise.all([1, 2, 3].map(() => read(pool)));
    for (const a of after) expect(a).toEqual({ hj: 'on', ss: 'on' });
    await expect(withTransaction(pool, read, { settings: { 'enable_seqscan = off; DROP TABLE t; --': 'x' } })).rejects.toThrow(/not a plain setting/);
    await expect(withTransaction(pool, read, { settings: { enable_seqscan: "off'; DROP TABLE t" } })).rejects.toThrow(/not a plain setting/);
    expect((await pool.query('SELECT count(*)::int AS n FROM t')).rows).toEqual([{ n: 1 }]);
  });
});
