import { describe, expect, it } from 'vitest';
import { summarizeTimeline, type TimelineMark } from './timeline.ts';

describe('summarizeTimeline', () => {
  it('finds the time with no lane busy before, between and after pages, and the lanes left idle', () => {
    const tl: TimelineMark[] = [
      { at: 1000, kind: 'run-start', n: 0 },
      { at: 1100, kind: 'page-start', n: 2, page: 0 },
      { at: 1100, kind: 'lanes', n: 1 },
      { at: 1150, kind: 'lanes', n: 2 },
      { at: 1200, kind: 'lanes', n: 0 },
      { at: 1200, kind: 'page-lanes-done', n: 2, page: 0 },
      { at: 1210, kind: 'batch-begin', n: 2 },
      { at: 1290, kind: 'batch-commit', n: 2 },
      { at: 1300, kind: 'page-end', n: 2, page: 0 },
      { at: 1400, kind: 'page-start', n: 1, page: 1 },
      { at: 1400, kind: 'lanes', n: 1 },
      { at: 1500, kind: 'lanes', n: 0 },
      { at: 1500, kind: 'page-lanes-done', n: 1, page: 1 },
      { at: 1550, kind: 'page-end', n: 1, page: 1 },
      { at: 1600, kind: 'run-end', n: 0 },
    ];
    const s = summarizeTimeline(tl, 2);
    expect(s.wallMs).toBe(600);
    expect(s.noLanesMs).toEqual({ beforeFirst: 100, betweenPages: 200, afterLast: 100 });
    // Lane-milliseconds busy: 1×50 + 2×50 + 1×100 = 250 of 2×600.
    expect(s.laneIdleShare).toBeCloseTo(1 - 250 / 1200, 3);
    expect(s.batches).toBe(1);
    expect(s.batchInFlightMs).toBe(80);
    expect(s.pages).toEqual([
      { start: 100, lanesDone: 200, end: 300, dids: 2 },
      { start: 400, lanesDone: 500, end: 550, dids: 1 },
    ]);
  });
});
