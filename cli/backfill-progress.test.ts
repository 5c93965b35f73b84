/**
 * Issue 12 item 12: `backfill add --wait` shows a live line while the bulk backfill runs. The
 * loop is driven here by a scripted run and clock (the command's end-to-end run is in
 * test/backfill-crash.e2e.test.ts); what is checked is what the operator sees.
 */
import { describe, expect, it } from 'vitest';
import type { BackfillProgress } from '../workflows/backfill.ts';
import { followBackfill, formatLiveLine } from './backfill-commands.ts';

const totals = (repos: number, records: number, failed = 0, extra: Partial<BackfillProgress['totals']> = {}): BackfillProgress['totals'] => ({
  repos,
  imported: repos - failed,
  skipped: 0,
  failed,
  gone: 0,
  deleted: 0,
  dropped: 0,
  records,
  blocks: 0,
  bytes: 0,
  invalidListed: 0,
  ...extra,
});
const progress = (state: BackfillProgress['state'], t: BackfillProgress['totals']): BackfillProgress => ({ state, source: '4 DIDs', cursor: undefined, totals: t, handedOver: t.failed });

/** A run whose progress goes through `steps` (one per query), then ends with `final` (or fails). */
function scripted(steps: Array<BackfillProgress | Error>, final: BackfillProgress | Error) {
  let i = 0;
  let finish!: () => void;
  const ended = new Promise<void>((r) => (finish = r));
  return {
    result: async () => {
      await ended;
      if (final instanceof Error) throw final;
      return final;
    },
    progress: async () => {
      const step = steps[i++];
      if (i >= steps.length) finish();
      if (step instanceof Error) throw step;
      return step!;
    },
  };
}

describe('formatLiveLine', () => {
  it('shows repos done of the total, records/s and failures', () => {
    expect(formatLiveLine(progress('running', totals(120, 3520, 3)), 2000, 10_000)).toBe('running: 120/2000 repos (6 %), 352.0 records/s, 3 failed → resync, 10 s');
    expect(formatLiveLine(progress('paused', totals(7, 0)), undefined, 0)).toBe('paused: 7 repos, 0.0 records/s, 0 failed → resync, 0 s');
    expect(formatLiveLine(progress('running', totals(9, 90, 1, { gone: 2, invalidListed: 5 })), undefined, 3000)).toBe(
      'running: 9 repos, 30.0 records/s, 1 failed → resync, 2 gone, 5 bad listing entries, 3 s',
    );
  });
});

describe('followBackfill', () => {
  const steps = [progress('running', totals(0, 0)), progress('running', totals(1, 50)), progress('running', totals(1, 50)), new Error('no worker answered'), progress('running', totals(3, 150, 1))];
  const final = progress('done', totals(4, 200, 1));

  it('prints a line each time the counts change when not on a terminal (skipping a failed query), and returns the final progress', async () => {
    const out: string[] = [];
    let clock = 0;
    const got = await followBackfill(scripted(steps, final), { total: 4, write: (s) => out.push(s), tty: false, intervalMs: 5, now: () => (clock += 1000) });
    expect(got).toEqual(final);
    expect(out.every((l) => l.endsWith('\n') && !l.includes('\r'))).toBe(true);
    const lines = out.map((l) => l.trimEnd());
    expect(lines).toEqual([
      'running: 0/4 repos (0 %), 0.0 records/s, 0 failed → resync, 1 s',
      'running: 1/4 repos (25 %), 25.0 records/s, 0 failed → resync, 2 s',
      'running: 3/4 repos (75 %), 37.5 records/s, 1 failed → resync, 4 s',
    ]);
    expect(lines.every((l) => /, [\d.]+ records\/s, /.test(l))).toBe(true);
  });

  it('redraws one line in place on a terminal and clears it at the end', async () => {
    const out: string[] = [];
    await followBackfill(scripted(steps, final), { total: undefined, write: (s) => out.push(s), tty: true, intervalMs: 5 });
    expect(out.length).toBeGreaterThanOrEqual(5);
    expect(out.slice(0, -1).every((s) => s.startsWith('\r\x1b[K') && !s.includes('\n'))).toBe(true);
    expect(out.at(-1)).toBe('\r\x1b[K');
    expect(out.some((s) => s.includes('3 repos'))).toBe(true);
  });

  it('rethrows the run’s failure', async () => {
    const err = new Error('workflow failed');
    await expect(followBackfill(scripted(steps.slice(0, 2), err), { total: 4, write: () => {}, tty: false, intervalMs: 5 })).rejects.toBe(err);
  });
});
