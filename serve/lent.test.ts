/** The shared read buffers of cold getRepo requests, and lent chunks' releases. */
import { describe, expect, it } from 'vitest';
import { BufferPool, lend, takeRelease } from './lent.ts';

describe('BufferPool', () => {
  it('hands a buffer back out only after it was given back, keeps at most `keep` idle, and never pools an odd size', () => {
    const pool = new BufferPool(1024, 2);
    const a = pool.take(1000);
    const b = pool.take(1024);
    expect(a).not.toBe(b);
    expect(a.length).toBe(1024);
    // Taken and not given back: never handed out again.
    const c = pool.take(10);
    expect(c).not.toBe(a);
    expect(c).not.toBe(b);
    pool.give(a);
    pool.give(a);
    expect(pool.idle).toBe(1);
    expect(pool.take(1)).toBe(a);
    pool.give(a);
    pool.give(b);
    pool.give(c);
    expect(pool.idle).toBe(2);
    // A range longer than the pool's buffers (a plan stored with bigger ranges) gets its own.
    const big = pool.take(5000);
    expect(big.length).toBe(5000);
    pool.give(big);
    expect(pool.idle).toBe(2);
  });

  it('a lent chunk has its release once', () => {
    let released = 0;
    const chunk = lend(new Uint8Array(4), () => released++);
    expect(takeRelease(new Uint8Array(4))).toBeUndefined();
    takeRelease(chunk)!();
    expect(takeRelease(chunk)).toBeUndefined();
    expect(released).toBe(1);
  });
});
