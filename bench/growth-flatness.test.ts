import { describe, expect, it } from 'vitest';
import { flatness, withinFlat } from './growth-flatness.ts';

describe('flatness', () => {
  it('divides the largest size by the smallest, whatever the order given', () => {
    const f = flatness([
      { size: 1000, figures: { validate: 90, cpu: 11 } },
      { size: 100_000, figures: { validate: 45, cpu: 22 } },
      { size: 10, figures: { validate: 100, cpu: 10 } },
    ]);
    expect(f).toEqual({ validate: 0.45, cpu: 2.2 });
  });

  it('leaves out a figure one end lacks or that is zero at the smallest', () => {
    const f = flatness([
      { size: 10, figures: { a: 0, b: 5, c: 4 } },
      { size: 20, figures: { a: 3, b: undefined, c: 5 } },
    ]);
    expect(f).toEqual({ c: 1.25 });
  });

  it('has nothing to say about one size', () => {
    expect(flatness([{ size: 10, figures: { a: 1 } }])).toEqual({});
  });

  it('calls 0.8 to 1.2 flat, and not beyond', () => {
    expect([0.79, 0.8, 1, 1.2, 1.21].map((r) => withinFlat(r))).toEqual([false, true, true, true, false]);
  });
});
