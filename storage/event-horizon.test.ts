/**
 * `EventHorizon`: the final point of the event log never passes an id that an open event writer
 * took, whatever order writers begin and commit in, and reaches the newest id once none is open.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { freshDatabase } from '../test/stack.ts';
import { openPool, withTransaction } from './db/pool.ts';
import { migrate } from './db/migrate.ts';
import { EVENT_WRITER, EventHorizon } from './event-horizon.ts';

let pool: pg.Pool;
const DID = 'did:plc:horizonaaaaaaaaaaaaaaaaa';

beforeAll(async () => {
  pool = openPool(await freshDatabase('event_horizon'));
  await migrate(pool);
}, 60_000);

afterAll(async () => {
  await pool?.end();
});

/** A writer that takes `n` ids now and ends (commits, or rolls back) when told. */
async function writer(n: number): Promise<{ ids: number[]; end: (commit: boolean) => Promise<void> }> {
  let finish!: (commit: boolean) => void;
  const decided = new Promise<boolean>((r) => (finish = r));
  let took!: (ids: number[]) => void;
  const taken = new Promise<number[]>((r) => (took = r));
  const done = withTransaction(
    pool,
    async (tx) => {
      const { rows } = await tx.query<{ id: string }>(`INSERT INTO events (did, kind, origin) SELECT $1, 'identity', 'live' FROM generate_series(1, $2) RETURNING id`, [DID, n]);
      took(rows.map((r) => Number(r.id)));
      if (!(await decided)) throw new Error('rolled back');
    },
    EVENT_WRITER,
  );
  done.catch(() => {});
  const ids = await taken;
  return { ids, end: async (commit) => (finish(commit), done.catch(() => {})) };
}

const visibleUpTo = async (upTo: number) =>
  (await pool.query<{ id: string }>('SELECT id FROM events WHERE id <= $1 ORDER BY id', [upTo])).rows.map((r) => Number(r.id));

describe('EventHorizon', () => {
  it('stays below every open writer, settles as they end in any order, and what it passes never changes', async () => {
    const horizon = new EventHorizon();
    const a = await writer(3);
    const b = await writer(2);
    expect(await horizon.advance(pool)).toBeLessThan(a.ids[0]!);
    await b.end(true);
    // b committed, a still open: nothing of b's is final yet.
    expect(await horizon.advance(pool)).toBeLessThan(a.ids[0]!);
    const c = await writer(1); // begins after the notes above
    await a.end(false);
    // a ended (rolled back), c still open: the note taken before c began settles.
    const final = await horizon.advance(pool);
    expect(final).toBeGreaterThanOrEqual(b.ids.at(-1)!);
    expect(final).toBeLessThan(c.ids[0]!);
    const seen = await visibleUpTo(final);
    expect(seen.filter((id) => id >= a.ids[0]!)).toEqual(b.ids);
    await c.end(true);
    expect(await horizon.advance(pool)).toBe(c.ids[0]!);
    expect(await visibleUpTo(final)).toEqual(seen);
  });

  it("a writer in another database of the server (another mirror) holds nothing back", async () => {
    const other = openPool(await freshDatabase('event_horizon_other'));
    let finish!: () => void;
    const decided = new Promise<void>((r) => (finish = r));
    let elsewhere: Promise<void> = Promise.resolve();
    try {
      await migrate(other);
      let began!: () => void;
      const open = new Promise<void>((r) => (began = r));
      elsewhere = withTransaction(
        other,
        async (tx) => {
          await tx.query(`INSERT INTO events (did, kind, origin) VALUES ($1, 'identity', 'live')`, [DID]);
          began();
          await decided;
        },
        EVENT_WRITER,
      );
      await open;
      const here = await writer(2);
      await here.end(true);
      expect(await new EventHorizon().advance(pool)).toBe(here.ids.at(-1)!);
    } finally {
      finish();
      await elsewhere;
      await other.end();
    }
  });

  it('a writer that takes no id until later is still waited for', async () => {
    const horizon = new EventHorizon();
    await horizon.advance(pool);
    let go!: () => void;
    const later = new Promise<void>((r) => (go = r));
    let inserted!: (id: number) => void;
    const took = new Promise<number>((r) => (inserted = r));
    let finish!: () => void;
    const decided = new Promise<void>((r) => (finish = r));
    const done = withTransaction(
      pool,
      async (tx) => {
        await later;
        const { rows } = await tx.query<{ id: string }>(`INSERT INTO events (did, kind, origin) VALUES ($1, 'identity', 'live') RETURNING id`, [DID]);
        inserted(Number(rows[0]!.id));
        await decided;
      },
      EVENT_WRITER,
    );
    // The writer has begun (its BEGIN took the lock) but taken nothing; another commits an id.
    await new Promise((r) => setTimeout(r, 100));
    const other = await writer(1);
    await other.end(true);
    const before = await horizon.advance(pool);
    expect(before).toBeLessThan(other.ids[0]!);
    go();
    const id = await took;
    expect(id).toBeGreaterThan(other.ids[0]!);
    expect(await horizon.advance(pool)).toBeLessThan(other.ids[0]!);
    finish();
    await done;
    expect(await horizon.advance(pool)).toBe(id);
  });
});
