import { describe, expect, it } from 'vitest';
import { backoffMs, BackoffOptions } from './backoff.ts';

describe('resync backoff', () => {
  const opts = BackoffOptions.parse({});
  it('doubles from 60 s to the 1 h cap without jitter at the midpoint', () => {
    const mid = () => 0.5;
    expect([1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffMs(n, opts, mid) / 1000)).toEqual([60, 120, 240, 480, 960, 1920, 3600, 3600]);
  });
  it('spreads by ±10 % at the extremes', () => {
    expect(backoffMs(1, opts, () => 0)).toBe(54_000);
    expect(backoffMs(1, opts, () => 1)).toBe(66_000);
  });
  it('never retries sooner than a Retry-After asks', () => {
    expect(backoffMs(1, opts, () => 0.5, 300_000)).toBe(300_000);
  });
});
