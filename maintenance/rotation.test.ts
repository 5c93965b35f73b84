/**
 * The rotating offset: R completed runs walk offsets 0 … R−1 once each, whatever fails, repeats
 * or changes rate in between; kept in PostgreSQL so any worker continues the rotation.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { freshDatabase } from '../test/stack.ts';
import { openPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { advanceRotation, claimRotation, completeRotation, readRotation, rotationAt } from './rotation.ts';

let pool: pg.Pool;

beforeAll(async () => {
  pool = openPool(await freshDatabase('rotation'));
  await migrate(pool);
});

afterAll(async () => {
  await pool?.end();
});

describe('rotation', () => {
  it('R runs cover every offset exactly once, then a new cycle starts', async () => {
    for (const rate of [1, 2, 5, 7]) {
      const name = `cover-${rate}`;
      const seen: number[] = [];
      for (let run = 0; run < rate; run++) {
        const { offset } = await claimRotation(pool, name, rate);
        seen.push(offset);
        await completeRotation(pool, name, rate, offset, `walk-${run}`);
      }
      expect([...seen].sort((a, b) => a - b)).toEqual(Array.from({ length: rate }, (_, i) => i));
      const state = await readRotation(pool, name);
      expect(state).toMatchObject({ rate, next: 0, cycle: 1, runs: rate });
      // The next cycle starts over at 0.
      expect((await claimRotation(pool, name, rate)).offset).toBe(0);
    }
  });

  it('a run that did not complete leaves the offset for the next run; a completion reported twice advances once', async () => {
    const name = 'failures';
    const rate = 4;
    const walked: number[] = [];
    // Runs 2 and 4 fail (no completion); run 3's completion is delivered twice (a retried activity).
    for (let run = 0; walked.length < rate; run++) {
      const { offset } = await claimRotation(pool, name, rate);
      if (run === 2 || run === 4) continue;
      await completeRotation(pool, name, rate, offset, `walk-${run}`);
      if (run === 3) await completeRotation(pool, name, rate, offset, `walk-${run}`);
      walked.push(offset);
    }
    expect(walked).toEqual([0, 1, 2, 3]);
    expect(await readRotation(pool, name)).toMatchObject({ next: 0, cycle: 1, runs: 4, last: { offset: 3, walkId: 'walk-5' } });
  });

  it('a changed rate starts a new cycle at 0; a late completion of the old rate changes nothing', async () => {
    const name = 'rate-change';
    for (let i = 0; i < 3; i++) {
      const { offset } = await claimRotation(pool, name, 5);
      await completeRotation(pool, name, 5, offset, `w${i}`);
    }
    const old = await claimRotation(pool, name, 5);
    expect(old.offset).toBe(3);
    const fresh = await claimRotation(pool, name, 3);
    expect(fresh).toMatchObject({ offset: 0, rate: 3, cycle: 0, runs: 0 });
    // The run claimed at rate 5 finishes after the change.
    expect(await completeRotation(pool, name, 5, old.offset, 'late')).toMatchObject({ rate: 3, next: 0 });
    const offsets: number[] = [];
    for (let i = 0; i < 3; i++) {
      const { offset } = await claimRotation(pool, name, 3);
      offsets.push(offset);
      await completeRotation(pool, name, 3, offset, `r3-${i}`);
    }
    expect(offsets).toEqual([0, 1, 2]);
  });

  it('pure state steps', () => {
    expect(rotationAt(undefined, 3)).toEqual({ rate: 3, next: 0, cycle: 0, runs: 0 });
    const s = advanceRotation(undefined, 3, 0, 'a', new Date(0));
    expect(s).toEqual({ rate: 3, next: 1, cycle: 0, runs: 1, last: { offset: 0, walkId: 'a', at: '1970-01-01T00:00:00.000Z' } });
    expect(advanceRotation(s, 3, 0, 'again')).toBe(s);
    expect(() => rotationAt(undefined, 0)).toThrow(/sample rate 0/);
  });
});
