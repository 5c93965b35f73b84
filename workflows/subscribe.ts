/**
 * `subscribe`, workflow id `subscribe/<host>`: follows one upstream's firehose. Its activity
 * (`subscribeRun`) reads and applies frames for `runForSeconds`, then returns its totals; the
 * workflow adds them up and starts the next run, and continues as new every `runsPerHistory`
 * runs so history stays small. The cursor is not workflow state: it is committed in PostgreSQL
 * with the events it covers, so every run (and every retry after a crashed worker) resumes right
 * after the last applied frame.
 *
 * Answers pause, resume and cancel, and a `progress` query (totals, the last run's rate, lag and
 * cursor); keeps RepowalkKind=subscribe and RepowalkState current, and its current details in
 * words for the Web UI.
 */
import {
  ActivityCancellationType,
  CancellationScope,
  condition,
  continueAsNew,
  defineQuery,
  defineSignal,
  isCancellation,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import { z } from 'zod';
import type { SyncActivities } from '../activities/sync.ts';
import { BackfillSettings } from '../backfill/settings.ts';
import type { SyncProgress } from '../sync/progress.ts';
import { parseInput } from './input.ts';
import { RepowalkKind, RepowalkState } from './search-attributes.ts';

const Totals = z.object({
  runs: z.number().int().min(0).default(0),
  frames: z.record(z.string(), z.number()).default({}),
  outcomes: z.record(z.string(), z.number()).default({}),
  errors: z.number().default(0),
  resyncs: z.number().default(0),
  reconnects: z.number().default(0),
  outdatedCursor: z.number().default(0),
});
type Totals = z.output<typeof Totals>;

export const SubscribeInput = z.object({
  /** The upstream's origin: a relay or a PDS (http(s) or ws(s)). */
  host: z.string().url(),
  /** Filters and ephemeral mode, as in backfill (and for the resyncs it starts). */
  settings: BackfillSettings.default(BackfillSettings.parse({})),
  /** The backfill job's task queue, where gaps are resynced (`backfillRepo`). */
  backfillTaskQueue: z.string().min(1),
  runForSeconds: z.number().int().min(1).max(3600).default(60),
  maxBatch: z.number().int().min(1).max(10_000).default(500),
  runsPerHistory: z.number().int().min(1).default(50),
  /** Carried across continue-as-new. */
  totals: Totals.default(Totals.parse({})),
});
export type SubscribeInput = z.input<typeof SubscribeInput>;

export type SubscribeStateName = 'running' | 'paused' | 'cancelled';

export interface SubscribeProgress {
  host: string;
  state: SubscribeStateName;
  totals: Totals;
  /** The last finished run's view: rate, lag, cursor. */
  last: Pick<SyncProgress, 'cursor' | 'eventsPerSecond' | 'lagMs' | 'waitingRepos' | 'lastError'> | undefined;
}

export const pauseSignal = defineSignal('pause');
export const resumeSignal = defineSignal('resume');
export const cancelSignal = defineSignal('cancel');
export const progressQuery = defineQuery<SubscribeProgress>('progress');

const { subscribeRun } = proxyActivities<SyncActivities>({
  // A run ends by itself after runForSeconds; this bounds a run that does not.
  startToCloseTimeout: '2 hours',
  // A dead worker's run is taken over this soon; the run heartbeats every few seconds.
  heartbeatTimeout: '20 seconds',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
});

export async function subscribe(rawInput: SubscribeInput): Promise<SubscribeProgress> {
  const input = parseInput(SubscribeInput, rawInput, 'subscribe');
  const totals: Totals = input.totals;
  let state: SubscribeStateName = 'running';
  let paused = false;
  let cancelled = false;
  let scope: CancellationScope | undefined;
  let last: SubscribeProgress['last'];
  const progress = (): SubscribeProgress => ({ host: input.host, state, totals, last });
  const show = () => {
    upsertSearchAttributes([
      { key: RepowalkKind, value: 'subscribe' },
      { key: RepowalkState, value: state },
    ]);
    const applied = totals.outcomes.imported ?? 0;
    setCurrentDetails(
      `**${state}** following ${input.host}: ${applied} commits applied, ${totals.outcomes.skipped ?? 0} replays skipped, ` +
        `${totals.resyncs} resyncs, ${totals.errors} frames kept as errors` +
        (last ? `; cursor ${last.cursor ?? '–'}, ${last.eventsPerSecond} events/s, lag ${last.lagMs === undefined ? '–' : `${Math.round(last.lagMs / 1000)} s`}` : ''),
    );
  };
  setHandler(progressQuery, progress);
  setHandler(pauseSignal, () => {
    paused = true;
    scope?.cancel();
  });
  setHandler(resumeSignal, () => {
    paused = false;
  });
  setHandler(cancelSignal, () => {
    cancelled = true;
    scope?.cancel();
  });
  show();

  for (let run = 0; run < input.runsPerHistory; run++) {
    if (paused && !cancelled) {
      state = 'paused';
      show();
      await condition(() => !paused || cancelled);
    }
    if (cancelled) break;
    state = 'running';
    show();
    try {
      const result = await (scope = new CancellationScope()).run(() =>
        subscribeRun({ host: input.host, settings: input.settings, backfillTaskQueue: input.backfillTaskQueue, runForSeconds: input.runForSeconds, maxBatch: input.maxBatch }),
      );
      add(totals, result);
      last = { cursor: result.cursor, eventsPerSecond: result.eventsPerSecond, lagMs: result.lagMs, waitingRepos: result.waitingRepos, lastError: result.lastError };
    } catch (err) {
      // A pause or a cancel ends the run; its applied frames are committed with their cursor.
      if (!isCancellation(err) && !isCancellation((err as { cause?: unknown }).cause)) throw err;
    } finally {
      scope = undefined;
    }
    show();
  }
  if (cancelled) {
    state = 'cancelled';
    show();
    return progress();
  }
  return continueAsNew<typeof subscribe>({ ...input, totals, settings: input.settings });
}

function add(t: Totals, p: SyncProgress): void {
  t.runs++;
  for (const [k, n] of Object.entries(p.frames)) t.frames[k] = (t.frames[k] ?? 0) + n;
  for (const [k, n] of Object.entries(p.outcomes)) t.outcomes[k] = (t.outcomes[k] ?? 0) + n;
  t.errors += p.errors;
  t.resyncs += p.resyncs;
  t.reconnects += p.reconnects;
  t.outdatedCursor += p.outdatedCursor;
}
