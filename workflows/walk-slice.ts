/**
 * `walkSlice`: one slice of a walk (the repos whose DID hash falls in it, or its share of the
 * walk's explicit roots), paged: each page is one `walkPage` activity, the cursor and running
 * totals live in workflow state, so a crashed worker costs at most the repos of one page that
 * its last heartbeat had not covered. Continues as new before its history grows large.
 *
 * Answers pause (no new page starts; the running one finishes), resume, cancel (the running
 * page is cancelled too) and a `progress` query; keeps RepowalkKind=walk-slice, WalkType and
 * RepowalkState current.
 */
import {
  CancellationScope,
  condition,
  continueAsNew,
  defineQuery,
  isCancellation,
  proxyActivities,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import { z } from 'zod';
import type { WalkActivities, WalkPageSource } from '../activities/walk.ts';
import { type WalkTotals, addTotals, emptyTotals } from '../graph/totals.ts';
import { WalkInput } from '../graph/walk-input.ts';
import { parseInput } from './input.ts';
import { RepowalkKind, RepowalkState, WalkType } from './search-attributes.ts';
import { handleControl } from './control.ts';

export { cancelSignal, pauseSignal, resumeSignal } from './control.ts';

export const WalkSliceInput = z.object({
  /** Findings are recorded under this id (the walk's, per pass). */
  walkId: z.string().min(1),
  /** The walk's input, as the parent validated it. */
  input: z.unknown(),
  slice: z.number().int().min(0),
  slices: z.number().int().min(1),
  /** Explicit roots of this slice, instead of the repos of the DID-hash slice. */
  roots: z.array(z.string()).optional(),
  /** Tail passes: only repos whose row changed at or after this ISO time. */
  changedSince: z.string().optional(),
  // State carried across continue-as-new.
  cursor: z.string().optional(),
  totals: z.custom<WalkTotals>().optional(),
  pages: z.number().int().min(0).default(0),
  repos: z.number().int().min(0).default(0),
  resumedRoots: z.number().int().min(0).default(0),
  expectedRepos: z.number().int().min(0).optional(),
  paused: z.boolean().default(false),
});
export type WalkSliceInput = z.input<typeof WalkSliceInput>;

export type WalkSliceState = 'running' | 'paused' | 'done' | 'cancelled';

export interface WalkSliceProgress {
  state: WalkSliceState;
  slice: number;
  slices: number;
  pages: number;
  repos: number;
  /** Repos in the slice when it started (unknown for explicit roots until listed). */
  expectedRepos: number | undefined;
  cursor: string | undefined;
  /** Repos a retried page did not walk again (its previous attempt had finished them). */
  resumedRoots: number;
  totals: WalkTotals;
}

export const walkSliceProgressQuery = defineQuery<WalkSliceProgress>('progress');

/** Pages before continue-as-new: each page costs about six history events. */
const PAGES_PER_RUN = 500;

export async function walkSlice(rawInput: WalkSliceInput): Promise<WalkSliceProgress> {
  const s = parseInput(WalkSliceInput, rawInput, 'walkSlice');
  const walk = parseInput(WalkInput, s.input, 'walkSlice');
  const acts = proxyActivities<WalkActivities>({
    startToCloseTimeout: '6 hours',
    heartbeatTimeout: `${walk.heartbeatSeconds} seconds`,
    retry: { initialInterval: '1 second', maximumInterval: '1 minute', maximumAttempts: 20 },
  });

  const p: WalkSliceProgress = {
    state: 'running',
    slice: s.slice,
    slices: s.slices,
    pages: s.pages,
    repos: s.repos,
    expectedRepos: s.expectedRepos ?? s.roots?.length,
    cursor: s.cursor,
    resumedRoots: s.resumedRoots,
    totals: s.totals ?? emptyTotals(),
  };
  let paused = s.paused;
  let cancelled = false;
  let page: CancellationScope | undefined;
  handleControl({
    pause: () => void (paused = true),
    resume: () => void (paused = false),
    cancel: () => {
      cancelled = true;
      page?.cancel();
    },
  });
  setHandler(walkSliceProgressQuery, () => ({ ...p, state: paused && p.state === 'running' ? 'paused' : p.state }));
  const show = (state: string) =>
    upsertSearchAttributes([
      { key: RepowalkKind, value: 'walk-slice' },
      { key: WalkType, value: walk.type },
      { key: RepowalkState, value: state },
    ]);
  show(paused ? 'paused' : 'running');

  try {
    if (p.expectedRepos === undefined) {
      p.expectedRepos = await acts.countSliceRepos({ slice: s.slice, slices: s.slices, changedSince: s.changedSince });
    }
    for (let run = 0; ; run++) {
      if (paused && !cancelled) {
        show('paused');
        await condition(() => !paused || cancelled);
        if (!cancelled) show('running');
      }
      if (cancelled) break;
      if (run >= PAGES_PER_RUN || workflowInfo().continueAsNewSuggested) {
        await continueAsNew<typeof walkSlice>({
          ...rawInput,
          cursor: p.cursor,
          totals: p.totals,
          pages: p.pages,
          repos: p.repos,
          resumedRoots: p.resumedRoots,
          expectedRepos: p.expectedRepos,
          paused,
        });
      }

      let source: WalkPageSource;
      let next: string | undefined;
      if (s.roots) {
        const from = Number(p.cursor ?? 0);
        const roots = s.roots.slice(from, from + walk.pageSize);
        if (roots.length === 0) break;
        source = { kind: 'roots', roots };
        next = from + roots.length < s.roots.length ? String(from + roots.length) : undefined;
      } else {
        source = { kind: 'slice', slice: s.slice, slices: s.slices, after: p.cursor, changedSince: s.changedSince };
      }
      page = new CancellationScope();
      const result = await page.run(() => acts.walkPage({ walkId: s.walkId, input: s.input as never, page: source }));
      page = undefined;
      addTotals(p.totals, result.totals);
      p.pages += 1;
      p.repos += result.roots;
      p.resumedRoots += result.resumedRoots;
      p.cursor = s.roots ? next : result.cursor;
      if (p.cursor === undefined) break;
    }
  } catch (err) {
    if (!isCancellation(err)) throw err;
    cancelled = true;
  }
  p.state = cancelled ? 'cancelled' : 'done';
  await CancellationScope.nonCancellable(async () => show(p.state));
  return p;
}
