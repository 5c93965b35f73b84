import { describe, expect, it } from 'vitest';
import { LanePool } from './lanes.ts';

const tick = () => new Promise((r) => setImmediate(r));

describe('LanePool', () => {
  it('grants up to the limit at once, then one per release', async () => {
    const pool = new LanePool();
    const page = pool.nextPage();
    const never = new AbortController().signal;
    expect(await pool.acquire(page, 2, never)).toBe(true);
    expect(await pool.acquire(page, 2, never)).toBe(true);
    let third = false;
    void pool.acquire(page, 2, never).then(() => (third = true));
    await tick();
    expect(third).toBe(false);
    pool.release();
    await tick();
    expect(third).toBe(true);
    expect(pool.busy).toBe(2);
  });

  it('serves the oldest page first, whatever the order its lanes came to wait in', async () => {
    const pool = new LanePool();
    const never = new AbortController().signal;
    const [p0, p1] = [pool.nextPage(), pool.nextPage()];
    await pool.acquire(p0, 1, never);
    const order: string[] = [];
    void pool.acquire(p1, 1, never).then(() => order.push('p1 a'));
    void pool.acquire(p0, 1, never).then(() => order.push('p0 a'));
    void pool.acquire(p1, 1, never).then(() => order.push('p1 b'));
    void pool.acquire(p0, 1, never).then(() => order.push('p0 b'));
    for (let i = 0; i < 4; i++) {
      pool.release();
      await tick();
    }
    expect(order).toEqual(['p0 a', 'p0 b', 'p1 a', 'p1 b']);
  });

  it('orders pages by the order given, not by when they came: the workflow settles pages in its own order', async () => {
    const pool = new LanePool();
    const never = new AbortController().signal;
    // Page 2 of a workflow reached the worker before page 1 (both scheduled at t=1000).
    const second = pool.nextPage([1000, 2]);
    const first = pool.nextPage([1000, 1]);
    const holder = pool.nextPage([0, 0]);
    await pool.acquire(holder, 1, never);
    const order: string[] = [];
    void pool.acquire(second, 1, never).then(() => order.push('second'));
    void pool.acquire(first, 1, never).then(() => order.push('first'));
    pool.release();
    await tick();
    pool.release();
    await tick();
    expect(order).toEqual(['first', 'second']);
  });

  it('a newer page does not pass an older one waiting, even with a lane free under its own limit', async () => {
    const pool = new LanePool();
    const never = new AbortController().signal;
    const [p0, p1] = [pool.nextPage(), pool.nextPage()];
    await pool.acquire(p0, 1, never);
    let older = false;
    void pool.acquire(p0, 1, never).then(() => (older = true));
    let newer = false;
    void pool.acquire(p1, 4, never).then(() => (newer = true));
    await tick();
    expect([older, newer]).toEqual([false, false]);
    pool.release();
    await tick();
    expect(older).toBe(true);
  });

  it('olderWaiting says when a lane of a newer page should give its lane up', async () => {
    const pool = new LanePool();
    const never = new AbortController().signal;
    const [p0, p1] = [pool.nextPage(), pool.nextPage()];
    await pool.acquire(p1, 1, never);
    expect(pool.olderWaiting(p1)).toBe(false);
    const older = pool.acquire(p0, 1, never);
    expect(pool.olderWaiting(p1)).toBe(true);
    expect(pool.olderWaiting(p0)).toBe(false);
    pool.release();
    expect(await older).toBe(true);
    expect(pool.olderWaiting(p1)).toBe(false);
  });

  it('an abort ends the wait without a lane, and the lane goes to the next waiter', async () => {
    const pool = new LanePool();
    const [p0, p1] = [pool.nextPage(), pool.nextPage()];
    const never = new AbortController().signal;
    await pool.acquire(p0, 1, never);
    const stop = new AbortController();
    const aborted = pool.acquire(p0, 1, stop.signal);
    let other = false;
    void pool.acquire(p1, 1, never).then(() => (other = true));
    stop.abort();
    expect(await aborted).toBe(false);
    pool.release();
    await tick();
    expect(other).toBe(true);
    expect(pool.busy).toBe(1);
    expect(await pool.acquire(p1, 1, stop.signal)).toBe(false);
  });
});
