/**
 * `walk`: a walk of the mirror (scrub, validate, corpus, compression-benefit). Its input is the
 * JSON of `graph/walk-input.ts`, validated at once (bad input fails the workflow, without
 * retries, naming each bad field). Repos are split into `slices` by DID hash (explicit roots:
 * dealt out round-robin), each a child `walkSlice` (`<walk id>/slice-<n>`), at most
 * `sliceParallelism` at a time; their totals add up to the walk's.
 *
 * Answers pause, resume and cancel (passed on to the running slices; a paused walk starts no
 * new slice) and a `progress` query (the slices done and running, and the totals of those
 * done; `repowalk walk status` adds the running slices' own progress). Keeps RepowalkKind=walk,
 * WalkType and RepowalkState current.
 *
 * With `tailIntervalSeconds`, after a pass it waits that long and walks again, only the repos
 * whose row changed since the pass began (less a minute, for imports that were committing as
 * it began), as a new run (continue-as-new) so history stays small. Each pass records findings
 * under its own id: the walk id, then `<walk id>#<pass>`.
 */
import {
  CancellationScope,
  ParentClosePolicy,
  condition,
  continueAsNew,
  defineQuery,
  isCancellation,
  setHandler,
  startChild,
  upsertSearchAttributes,
  setCurrentDetails,
  workflowInfo,
  type ChildWorkflowHandle,
} from '@temporalio/workflow';
import { z } from 'zod';
import { type WalkTotals, addTotals, emptyTotals, findingCount } from '../graph/totals.ts';
import { WalkInput, type WalkInputJson } from '../graph/walk-input.ts';
import { parseInput } from './input.ts';
import { RepowalkKind, RepowalkState, WalkType } from './search-attributes.ts';
import { type WalkSliceProgress, walkSlice } from './walk-slice.ts';
import { controlSignals, handleControl, type ControlName } from './control.ts';

export { cancelSignal, pauseSignal, resumeSignal } from './control.ts';

/** What a walk carries from one pass to the next (continue-as-new); not for callers. */
const PassState = z.object({
  pass: z.number().int().min(0).default(0),
  changedSince: z.string().optional(),
  /** Totals of the passes before this one. */
  previous: z.custom<WalkTotals>().optional(),
});

export type WalkWorkflowInput = WalkInputJson & { state?: z.input<typeof PassState> };

export type WalkState = 'running' | 'paused' | 'tailing' | 'done' | 'cancelled';

export interface WalkProgress {
  walkId: string;
  type: string;
  state: WalkState;
  pass: number;
  /** The id findings of this pass are recorded under. */
  findingsId: string;
  slices: { total: number; done: number; running: string[] };
  /** Totals of this pass's finished slices. */
  totals: WalkTotals;
  /** Totals of every finished slice of every pass. */
  allPasses: WalkTotals;
  repos: number;
  pages: number;
  /** When the next tail pass starts, while tailing. */
  nextPassAt?: string;
}

export const walkProgressQuery = defineQuery<WalkProgress>('progress');

/** Tail passes look back this far before the previous pass began. */
const TAIL_MARGIN_MS = 60_000;

export async function walk(raw: WalkWorkflowInput): Promise<WalkProgress> {
  const input = parseInput(WalkInput, raw, 'walk');
  const state = parseInput(PassState, raw?.state ?? {}, 'walk');
  const { workflowId } = workflowInfo();
  const passStarted = Date.now();
  const findingsId = state.pass === 0 ? workflowId : `${workflowId}#${state.pass}`;
  const { state: _state, ...inputJson } = raw;

  const p: WalkProgress = {
    walkId: workflowId,
    type: input.type,
    state: 'running',
    pass: state.pass,
    findingsId,
    slices: { total: input.slices, done: 0, running: [] },
    totals: emptyTotals(),
    allPasses: addTotals(emptyTotals(), state.previous ?? emptyTotals()),
    repos: 0,
    pages: 0,
  };
  let paused = false;
  let cancelled = false;
  const running = new Map<number, ChildWorkflowHandle<typeof walkSlice>>();
  const forward = async (signal: ControlName) => {
    // A slice that finished meanwhile cannot be signalled; that is fine.
    await Promise.all([...running.values()].map((h) => h.signal(controlSignals[signal]).catch(() => {})));
  };
  handleControl({
    pause: async () => {
      paused = true;
      await forward('pause');
    },
    resume: async () => {
      paused = false;
      await forward('resume');
    },
    cancel: async () => {
      cancelled = true;
      await forward('cancel');
    },
  });
  setHandler(walkProgressQuery, () => ({
    ...p,
    state: paused && (p.state === 'running' || p.state === 'tailing') ? 'paused' : p.state,
    slices: { ...p.slices, running: [...running.values()].map((h) => h.workflowId) },
  }));
  const show = (s: string) => {
    upsertSearchAttributes([
      { key: RepowalkKind, value: 'walk' },
      { key: WalkType, value: input.type },
      { key: RepowalkState, value: s },
    ]);
    // What the Web UI shows as this workflow's current details.
    setCurrentDetails(
      `**${input.type} walk: ${s}**${state.pass > 0 ? ` (tail pass ${state.pass})` : ''}\n\n` +
        `slices ${p.slices.done} of ${input.slices} done, ${p.repos} repos, ${p.totals.nodes} nodes, ` +
        `${findingCount(p.totals, 'error')} errors, ${findingCount(p.totals, 'warn')} warnings` +
        (p.nextPassAt ? `\n\nnext pass at ${p.nextPassAt}` : ''),
    );
  };
  show('running');

  const pending = Array.from({ length: input.slices }, (_, i) => i);
  const failures: unknown[] = [];
  try {
    while ((pending.length > 0 && !cancelled) || running.size > 0) {
      show(paused ? 'paused' : 'running');
      while (!paused && !cancelled && running.size < input.sliceParallelism && pending.length > 0) {
        const slice = pending.shift()!;
        const handle = await startChild(walkSlice, {
          workflowId: `${workflowId}/slice-${slice}${state.pass > 0 ? `/pass-${state.pass}` : ''}`,
          args: [
            {
              walkId: findingsId,
              input: inputJson,
              slice,
              slices: input.slices,
              ...(input.roots ? { roots: input.roots.filter((_, j) => j % input.slices === slice) } : {}),
              ...(state.changedSince ? { changedSince: state.changedSince } : {}),
            },
          ],
          parentClosePolicy: ParentClosePolicy.TERMINATE,
        });
        running.set(slice, handle);
        handle.result().then(
          (r: WalkSliceProgress) => {
            running.delete(slice);
            p.slices.done += 1;
            addTotals(p.totals, r.totals);
            addTotals(p.allPasses, r.totals);
            p.repos += r.repos;
            p.pages += r.pages;
            if (r.state === 'cancelled') cancelled = true;
          },
          (err: unknown) => {
            running.delete(slice);
            failures.push(err);
          },
        );
      }
      const seen = running.size;
      const wasPaused = paused;
      await condition(() => running.size < seen || paused !== wasPaused || cancelled || failures.length > 0);
      if (failures.length > 0) {
        cancelled = true;
        await forward('cancel');
        await condition(() => running.size === 0);
        throw failures[0];
      }
      if (cancelled && running.size > 0) await condition(() => running.size === 0);
    }
    if (!cancelled && input.tailIntervalSeconds !== undefined) {
      p.state = 'tailing';
      p.nextPassAt = new Date(Date.now() + input.tailIntervalSeconds * 1000).toISOString();
      // Wait out the interval, showing a pause or resume as it comes rather than when it ends.
      const deadline = Date.now() + input.tailIntervalSeconds * 1000;
      while (!cancelled && Date.now() < deadline) {
        const before = paused;
        show(paused ? 'paused' : 'tailing');
        await condition(() => cancelled || paused !== before, deadline - Date.now());
      }
      if (paused && !cancelled) {
        show('paused');
        await condition(() => !paused || cancelled);
      }
      if (!cancelled) {
        await continueAsNew<typeof walk>({
          ...inputJson,
          state: { pass: state.pass + 1, changedSince: new Date(passStarted - TAIL_MARGIN_MS).toISOString(), previous: p.allPasses },
        });
      }
    }
  } catch (err) {
    if (!isCancellation(err)) {
      await CancellationScope.nonCancellable(async () => show('failed'));
      throw err;
    }
    cancelled = true;
  }
  p.state = cancelled ? 'cancelled' : 'done';
  delete p.nextPassAt;
  await CancellationScope.nonCancellable(async () => show(p.state));
  return { ...p, slices: { ...p.slices, running: [] } };
}
