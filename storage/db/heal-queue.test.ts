import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { freshDatabase } from '../../test/stack.ts';
import { PgHealQueue } from './heal-queue.ts';
import { migrate } from './migrate.ts';
import { openPool } from './pool.ts';

describe('PgHealQueue', () => {
  let pool: pg.Pool;
  let queue: PgHealQueue;

  beforeAll(async () => {
    pool = openPool(await freshDatabase('heal'));
    await migrate(pool);
    queue = new PgHealQueue(pool);
  });
  beforeEach(async () => {
    await pool.query('TRUNCATE heal_queue');
  });
  afterAll(async () => {
    await pool.end();
  });

  it('keeps one open entry per key and component, updated by repeated records', async () => {
    await queue.record({ key: 'packs/ab/x.car', component: 's3:a', reason: 'missed-write', detail: 'timeout' });
    await queue.record({ key: 'packs/ab/x.car', component: 's3:a', reason: 'corrupt', detail: 'sha-256 is 00' });
    await queue.record({ key: 'packs/ab/x.car', component: 's3:b', reason: 'missing' });

    expect(await queue.countOpen()).toBe(2);
    const open = await queue.listOpen();
    expect(open).toHaveLength(2);
    expect(open[0]).toMatchObject({ key: 'packs/ab/x.car', component: 's3:a', reason: 'corrupt', detail: 'sha-256 is 00', seenCount: 2, healedAt: null });
    expect(open[1]).toMatchObject({ component: 's3:b', reason: 'missing', seenCount: 1 });
    expect(open[1]).not.toHaveProperty('detail');
    expect(open[0]!.lastSeenAt.getTime()).toBeGreaterThanOrEqual(open[0]!.createdAt.getTime());
  });

  it('does not pile up rows when many workers record the same miss at once', async () => {
    await Promise.all(
      Array.from({ length: 20 }, () => queue.record({ key: 'blobs/01/bafy', component: 's3:a', reason: 'missed-write' })),
    );
    const open = await queue.listOpen();
    expect(open).toHaveLength(1);
    expect(open[0]!.seenCount).toBe(20);
  });

  it('closes entries by id and by key; a later miss opens a new entry and history stays', async () => {
    await queue.record({ key: 'k1', component: 's3:a', reason: 'missing' });
    await queue.record({ key: 'k2', component: 's3:a', reason: 'missing' });
    const [first] = await queue.listOpen();

    expect(await queue.markHealed(first!.id)).toBe(true);
    expect(await queue.markHealed(first!.id)).toBe(false);
    expect(await queue.markHealedKey('k2', 's3:a')).toBe(true);
    expect(await queue.markHealedKey('k2', 's3:a')).toBe(false);
    expect(await queue.countOpen()).toBe(0);

    await queue.record({ key: 'k1', component: 's3:a', reason: 'corrupt' });
    const open = await queue.listOpen();
    expect(open).toHaveLength(1);
    expect(open[0]!.id).not.toBe(first!.id);
    expect(open[0]!.seenCount).toBe(1);
    const all = await pool.query('SELECT count(*)::int AS n FROM heal_queue');
    expect(all.rows[0].n).toBe(3);
  });

  it('lists open entries oldest first, at most limit', async () => {
    for (let i = 0; i < 5; i++) await queue.record({ key: `k${i}`, component: 'local', reason: 'missing' });
    const page = await queue.listOpen(3);
    expect(page.map((e) => e.key)).toEqual(['k0', 'k1', 'k2']);
  });

  it('rejects a reason outside the contract', async () => {
    await expect(queue.record({ key: 'k', component: 'c', reason: 'bored' as never })).rejects.toThrow(/heal_queue_reason_check/);
  });
});
