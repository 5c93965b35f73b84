/**
 * The periodic jobs, one workflow each, started by Temporal Schedules (`schedules/schedules.ts`)
 * on the maintenance task queue, or by hand with `temporal workflow start --input '…'`:
 *
 * - `resyncSweep`: every repo whose retry time has passed and that has no running
 *   `backfill/<did>` gets one (started as an abandoned child on the backfill queue); a repo whose
 *   workflow is running is skipped, one whose workflow was terminated by hand gets a new run.
 * - `goneRecheck`: the same for gone repos whose re-check time has passed.
 * - `retention`: events past their retention are trimmed.
 * - `gc`: mark, sweep, repack, blobs, orphans.
 * - `rotatingWalk`: a scrub or validate walk of the next 1/R sample of the mirror, as a child
 *   `walk` on the walk queue; the offset advances when the walk completes.
 * - `stats`: the mirror's counts, into job_state.
 *
 * Inputs are plain JSON validated with zod (bad input fails at once, naming the field). Each
 * workflow keeps RepowalkKind = `maintenance/<name>` and RepowalkState current, answers a
 * `progress` query, and the long ones answer pause, resume and cancel.
 */
import {
  CancellationScope,
  ContinueAsNew,
  ParentClosePolicy,
  condition,
  continueAsNew,
  defineQuery,
  defineSignal,
  isCancellation,
  proxyActivities,
  setHandler,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
  type ChildWorkflowHandle,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { z } from 'zod';
import type { MaintenanceActivities } from '../activities/maintenance.ts';
import type { RetentionResult } from '../maintenance/retention.ts';
import type { GcReport } from '../maintenance/gc.ts';
import type { MirrorStats } from '../maintenance/stats.ts';
import type { RotationState } from '../maintenance/rotation.ts';
import { BackfillSettings } from '../backfill/settings.ts';
import { WalkInput } from '../graph/walk-input.ts';
import type { backfillRepo } from './backfill-repo.ts';
import type { walk, WalkProgress } from './walk.ts';
import { parseInput } from './input.ts';
import { RepowalkKind, RepowalkState } from './search-attributes.ts';

export const pauseSignal = defineSignal('pause');
export const resumeSignal = defineSignal('resume');
export const cancelSignal = defineSignal('cancel');

export type MaintenanceState = 'running' | 'paused' | 'done' | 'cancelled' | 'failed';

function show(name: string, state: MaintenanceState): void {
  upsertSearchAttributes([
    { key: RepowalkKind, value: `maintenance/${name}` },
    { key: RepowalkState, value: state },
  ]);
}

/** Sets the state attribute to failed (or cancelled) on the way out of a workflow that threw. */
async function closing<T>(name: string, body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (err) {
    if (err instanceof ContinueAsNew) throw err;
    await CancellationScope.nonCancellable(async () => show(name, isCancellation(err) ? 'cancelled' : 'failed'));
    throw err;
  }
}

const quick = proxyActivities<MaintenanceActivities>({
  startToCloseTimeout: '2 minutes',
  retry: { initialInterval: '2 seconds', maximumInterval: '1 minute', maximumAttempts: 10 },
});

// ---------------------------------------------------------------------------------------------
// resyncSweep, goneRecheck

export const SweepInput = z.object({
  /** Task queue of the backfill job, where `backfillRepo` runs. */
  backfillTaskQueue: z.string().min(1),
  /** Backfill settings the started repos get (the mirror does not record a repo's own). */
  settings: BackfillSettings.optional(),
  /** Repos per page (one activity and one batch of child starts). */
  pageSize: z.number().int().min(1).max(1000).default(100),
  /** Start at most this many repos per run; the rest wait for the next. */
  maxStarts: z.number().int().min(1).optional(),
  // Carried across continue-as-new; not for callers.
  asOf: z.string().datetime().optional(),
  after: z.string().optional(),
  totals: z.object({ pages: z.number(), due: z.number(), started: z.number(), running: z.number() }).optional(),
});
export type SweepInput = z.input<typeof SweepInput>;

export interface SweepProgress {
  kind: 'resync' | 'gone';
  state: MaintenanceState;
  /** Repos due at or before this time are swept. */
  asOf: string;
  pages: number;
  /** Due repos seen. */
  due: number;
  /** Repos given a new `backfill/<did>`. */
  started: number;
  /** Repos whose `backfill/<did>` was already running. */
  running: number;
  /** The DIDs started by this run (the first 1000). */
  startedDids: string[];
}

export const progressQuery = defineQuery<unknown>('progress');

/** Continue-as-new before history holds this many events (a child start costs about three). */
const HISTORY_LIMIT = 8000;

async function sweep(kind: 'resync' | 'gone', name: string, raw: SweepInput): Promise<SweepProgress> {
  const input = parseInput(SweepInput, raw, name);
  const p: SweepProgress = {
    kind,
    state: 'running',
    asOf: input.asOf ?? new Date().toISOString(),
    ...(input.totals ?? { pages: 0, due: 0, started: 0, running: 0 }),
    startedDids: [],
  };
  let paused = false;
  let cancelled = false;
  setHandler(pauseSignal, () => void (paused = true));
  setHandler(resumeSignal, () => void (paused = false));
  setHandler(cancelSignal, () => void (cancelled = true));
  setHandler(progressQuery, () => ({ ...p, state: paused && p.state === 'running' ? 'paused' : p.state }));
  show(name, 'running');

  return closing(name, async () => {
    let after = input.after;
    for (;;) {
      if (paused) {
        show(name, 'paused');
        await condition(() => !paused || cancelled);
        if (!cancelled) show(name, 'running');
      }
      if (cancelled) break;
      const left = input.maxStarts === undefined ? input.pageSize : Math.min(input.pageSize, input.maxStarts - p.started);
      if (left <= 0) break;
      const page = await quick.dueRepos({ kind, asOf: p.asOf, after, limit: left });
      p.pages++;
      p.due += page.repos.length;
      // One batch of starts per page: one workflow task issues them all.
      const outcomes = await Promise.all(
        page.repos.map(async (repo) => {
          try {
            await startChild<typeof backfillRepo>('backfillRepo', {
              workflowId: `backfill/${repo.did}`,
              taskQueue: input.backfillTaskQueue,
              args: [{ did: repo.did, retryCount: repo.resyncCount, ...(input.settings ? { settings: input.settings } : {}) }],
              // The repo's workflow outlives the sweep: it may wait out hours of backoff.
              parentClosePolicy: ParentClosePolicy.ABANDON,
            });
            return 'started' as const;
          } catch (err) {
            if (err instanceof WorkflowExecutionAlreadyStartedError || (err as Error)?.name === 'WorkflowExecutionAlreadyStartedError') return 'running' as const;
            throw err;
          }
        }),
      );
      outcomes.forEach((o, i) => {
        if (o === 'running') p.running++;
        else {
          p.started++;
          if (p.startedDids.length < 1000) p.startedDids.push(page.repos[i]!.did);
        }
      });
      after = page.cursor;
      if (after === undefined) break;
      const info = workflowInfo();
      if (info.continueAsNewSuggested || info.historyLength > HISTORY_LIMIT) {
        await continueAsNew<typeof resyncSweep>({
          ...raw,
          asOf: p.asOf,
          after,
          totals: { pages: p.pages, due: p.due, started: p.started, running: p.running },
        });
      }
    }
    p.state = cancelled ? 'cancelled' : 'done';
    show(name, p.state);
    return p;
  });
}

/** Starts `backfillRepo` for every repo in resync whose retry time has passed and that has none running. */
export async function resyncSweep(raw: SweepInput): Promise<SweepProgress> {
  return sweep('resync', 'resync-sweep', raw);
}

/** Starts `backfillRepo` for every gone repo whose re-check time has passed and that has none running. */
export async function goneRecheck(raw: SweepInput): Promise<SweepProgress> {
  return sweep('gone', 'gone-recheck', raw);
}

// ---------------------------------------------------------------------------------------------
// retention

export const RetentionInput = z.object({
  batchSize: z.number().int().min(1).max(100_000).default(5000),
  /** Stop after this many batches; the rest waits for the next run. */
  maxBatches: z.number().int().min(1).optional(),
});
export type RetentionInput = z.input<typeof RetentionInput>;

const long = (heartbeat: string, startToClose: string) =>
  proxyActivities<MaintenanceActivities>({
    startToCloseTimeout: startToClose,
    heartbeatTimeout: heartbeat,
    retry: { initialInterval: '30 seconds', maximumInterval: '10 minutes', maximumAttempts: 5 },
  });

/** Trims the events past their retention (ephemeral mode). */
export async function retention(raw: RetentionInput = {}): Promise<RetentionResult> {
  const input = parseInput(RetentionInput, raw, 'retention');
  const startedAt = new Date().toISOString();
  setHandler(progressQuery, () => ({ state: 'running', startedAt }));
  show('retention', 'running');
  return closing('retention', async () => {
    const result = await long('2 minutes', '6 hours').trimExpiredEvents({ batchSize: input.batchSize, maxBatches: input.maxBatches });
    show('retention', 'done');
    return result;
  });
}

// ---------------------------------------------------------------------------------------------
// gc

export const GcInput = z.object({
  /** Packs, blobs and orphans younger than this are kept. */
  graceSeconds: z.number().int().min(0).default(86400),
  /** Repack packs whose live share of bytes is below this; 0 turns repacking off. */
  repackBelow: z.number().min(0).max(1).default(0.25),
  repackTargetBytes: z.number().int().min(1024).optional(),
  /** Report what would be done, change nothing. */
  dryRun: z.boolean().default(false),
  orphans: z.boolean().default(true),
});
export type GcInput = z.input<typeof GcInput>;

export type GcOutcome = ({ state: 'done' } & GcReport) | { state: 'cancelled' };

/**
 * Mark (a walk from every repo), sweep, repack, blobs, orphans: see `maintenance/gc.ts`. The
 * `cancel` signal (like cancelling the workflow) stops the run at its next safe point.
 */
export async function gc(raw: GcInput = {}): Promise<GcOutcome> {
  const input = parseInput(GcInput, raw, 'gc');
  const startedAt = new Date().toISOString();
  let cancelled = false;
  const scope = new CancellationScope();
  setHandler(cancelSignal, () => {
    cancelled = true;
    scope.cancel();
  });
  setHandler(progressQuery, () => ({ state: cancelled ? 'cancelled' : 'running', startedAt, input }));
  show('gc', 'running');
  return closing('gc', async () => {
    try {
      const report = await scope.run(() => long('5 minutes', '24 hours').collectGarbage(input));
      show('gc', 'done');
      return { state: 'done', ...report };
    } catch (err) {
      if (!(cancelled && isCancellation(err))) throw err;
      show('gc', 'cancelled');
      return { state: 'cancelled' };
    }
  });
}

// ---------------------------------------------------------------------------------------------
// rotatingWalk

export const RotatingWalkInput = z.object({
  type: z.enum(['scrub', 'validate']),
  /** Sample rate R: each run walks 1/R of the mirror, R runs all of it. */
  rate: z.number().int().min(1).max(1_000_000),
  /** Task queue of the walk job, where `walk` runs. */
  walkTaskQueue: z.string().min(1),
  /** The rotation's name in job_state; default `rotating-<type>`. */
  name: z.string().min(1).max(100).optional(),
  /** More of the walk's input (slices, repair, checks, …); not its type or sampling. */
  walk: z.record(z.string(), z.unknown()).default({}),
});
export type RotatingWalkInput = z.input<typeof RotatingWalkInput>;

export interface RotatingWalkResult {
  name: string;
  rate: number;
  offset: number;
  /** Completed cycles before this run. */
  cycle: number;
  walkId: string;
  walk: WalkProgress;
  /** The rotation after this run (unchanged when the walk did not complete). */
  rotation: RotationState | undefined;
}

/** Claims the rotation's next offset, walks that sample as a child, and advances the offset when it completes. */
export async function rotatingWalk(raw: RotatingWalkInput): Promise<RotatingWalkResult> {
  const input = parseInput(RotatingWalkInput, raw, 'rotatingWalk');
  const name = input.name ?? `rotating-${input.type}`;
  const { type: _t, sampleRate: _r, sampleOffset: _o, ...extra } = input.walk;
  // The walk's own validation, up front: a bad schedule fails now, not after claiming an offset.
  parseInput(WalkInput, { ...extra, type: input.type, sampleRate: input.rate, sampleOffset: 0 }, 'rotatingWalk.walk');
  const walkId = `${workflowInfo().workflowId}/walk`;
  let child: ChildWorkflowHandle<typeof walk> | undefined;
  let claimed: { offset: number; cycle: number } | undefined;
  let state: MaintenanceState = 'running';
  // The walk answers these itself; the rotation passes them on, so one id controls both.
  const forward = async (signal: 'pause' | 'resume' | 'cancel') => {
    if (signal === 'pause' && state === 'running') state = 'paused';
    if (signal === 'resume' && state === 'paused') state = 'running';
    await child?.signal(signal).catch(() => {});
  };
  setHandler(pauseSignal, () => forward('pause'));
  setHandler(resumeSignal, () => forward('resume'));
  setHandler(cancelSignal, () => forward('cancel'));
  setHandler(progressQuery, () => ({ name, rate: input.rate, state, ...claimed, walkId: child ? walkId : undefined }));
  show(name, 'running');

  return closing(name, async () => {
    const c = await quick.claimRotation({ name, rate: input.rate });
    claimed = { offset: c.offset, cycle: c.cycle };
    child = await startChild<typeof walk>('walk', {
      workflowId: walkId,
      taskQueue: input.walkTaskQueue,
      args: [{ ...extra, type: input.type, sampleRate: input.rate, sampleOffset: c.offset }],
      parentClosePolicy: ParentClosePolicy.TERMINATE,
    });
    const result = await child.result();
    const rotation = result.state === 'done' ? await quick.completeRotation({ name, rate: input.rate, offset: c.offset, walkId }) : undefined;
    state = result.state === 'done' ? 'done' : 'cancelled';
    show(name, state);
    return { name, rate: input.rate, offset: c.offset, cycle: c.cycle, walkId, walk: result, rotation };
  });
}

// ---------------------------------------------------------------------------------------------
// stats

/** Counts the mirror (repos by state, records, blocks, packs, bytes, …) into job_state 'stats'. */
export async function stats(): Promise<MirrorStats> {
  show('stats', 'running');
  setHandler(progressQuery, () => ({ state: 'running' }));
  return closing('stats', async () => {
    const s = await quick.collectStats();
    show('stats', 'done');
    return s;
  });
}
