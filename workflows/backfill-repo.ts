/**
 * `backfillRepo`, workflow id `backfill/<did>`: imports one repo and, while it fails, waits out
 * an exponential backoff as a durable timer (visible in the UI) and tries again. Answers pause,
 * resume, cancel and resync-now; its state is a query and its search attributes (RepoDid,
 * RepowalkState, RepowalkRetryCount) keep `temporal workflow list` current.
 */
import {
  condition,
  continueAsNew,
  defineQuery,
  defineSignal,
  isCancellation,
  proxyActivities,
  setHandler,
  upsertSearchAttributes,
  setCurrentDetails,
  workflowInfo,
  CancellationScope,
} from '@temporalio/workflow';
import { z } from 'zod';
import type { BackfillActivities } from '../activities/backfill.ts';
import { backoffMs } from '../backfill/backoff.ts';
import { BackfillSettings, Did, type RepoOutcome } from '../backfill/settings.ts';
import { parseInput } from './input.ts';
import { RepoDid, RepowalkKind, RepowalkRetryCount, RepowalkState } from './search-attributes.ts';
import { handleControl } from './control.ts';

export { cancelSignal, pauseSignal, resumeSignal } from './control.ts';

export const BackfillRepoInput = z.object({
  did: Did,
  settings: BackfillSettings.default(BackfillSettings.parse({})),
  /** Carried across continue-as-new, or handed over by a bulk backfill whose attempt failed. */
  retryCount: z.number().int().min(0).default(0),
  firstOutcome: z
    .object({ kind: z.literal('retry'), did: z.string(), resync: z.enum(['rate-limited', 'transport', 'error']), error: z.string(), retryAfterMs: z.number().optional() })
    .optional(),
});
export type BackfillRepoInput = z.input<typeof BackfillRepoInput>;

export type BackfillRepoStateName = 'importing' | 'backoff' | 'paused' | 'done' | 'gone' | 'deleted' | 'dropped' | 'cancelled';

export interface BackfillRepoState {
  did: string;
  state: BackfillRepoStateName;
  retryCount: number;
  /** ISO time of the next attempt while in backoff. */
  nextRetryAt: string | undefined;
  lastError: string | undefined;
  lastOutcome: RepoOutcome | undefined;
}

/** Ends a backoff at once: the next attempt starts now. */
export const resyncNowSignal = defineSignal('resyncNow');
/** Wire name `state` (not `progress`): operators query it by that name (README "Backfill"). */
export const backfillRepoStateQuery = defineQuery<BackfillRepoState>('state');

const { backfillRepoOnce, recordResync } = proxyActivities<BackfillActivities>({
  startToCloseTimeout: '15 minutes',
  heartbeatTimeout: '1 minute',
  // Outcomes of the PDS (429, resets, bad CARs) come back as values and go to the backoff below;
  // what is retried here is the worker's own trouble (database or blobstore briefly away).
  retry: { initialInterval: '2 seconds', maximumInterval: '1 minute', maximumAttempts: 10 },
});

export async function backfillRepo(rawInput: BackfillRepoInput): Promise<BackfillRepoState> {
  const input = parseInput(BackfillRepoInput, rawInput, 'backfillRepo');
  const s: BackfillRepoState = { did: input.did, state: 'importing', retryCount: input.retryCount, nextRetryAt: undefined, lastError: undefined, lastOutcome: undefined };
  let paused = false;
  let cancelled = false;
  let resyncNow = false;
  /** Waiting out a backoff timer (which a pause does not stop). */
  let inBackoff = false;
  // A pause or resume during a backoff shows at once, not when the timer (up to an hour) fires.
  handleControl({
    pause: () => {
      paused = true;
      if (inBackoff && s.state === 'backoff') show('paused');
    },
    resume: () => {
      paused = false;
      if (inBackoff && s.state === 'paused') show('backoff');
    },
    cancel: () => void (cancelled = true),
  });
  setHandler(resyncNowSignal, () => void (resyncNow = true));
  setHandler(backfillRepoStateQuery, () => ({ ...s, state: paused && s.state !== 'importing' ? 'paused' : s.state }));

  function show(state: BackfillRepoStateName): void {
    s.state = state;
    upsertSearchAttributes([
      { key: RepowalkKind, value: 'backfill' },
      { key: RepoDid, value: input.did },
      { key: RepowalkState, value: state },
      { key: RepowalkRetryCount, value: s.retryCount },
    ]);
    // What the Web UI shows as this workflow's current details.
    setCurrentDetails(
      `**backfill ${input.did}: ${state}**` +
        (s.retryCount > 0 ? `\n\nretry ${s.retryCount}` : '') +
        (s.nextRetryAt ? `, next attempt at ${s.nextRetryAt}` : '') +
        (s.lastError ? `\n\nlast error: ${s.lastError}` : ''),
    );
  }

  let pending: RepoOutcome | undefined = input.firstOutcome;
  try {
    for (;;) {
      if (paused) {
        show('paused');
        await condition(() => !paused || cancelled);
      }
      if (cancelled) break;
      let outcome: RepoOutcome;
      if (pending) {
        outcome = pending;
        pending = undefined;
      } else {
        show('importing');
        outcome = await backfillRepoOnce(input.did, input.settings);
      }
      s.lastOutcome = outcome;
      switch (outcome.kind) {
        case 'imported':
        case 'skipped':
          s.lastError = undefined;
          s.nextRetryAt = undefined;
          show('done');
          return s;
        case 'gone':
        case 'deleted':
        case 'dropped':
          s.nextRetryAt = undefined;
          show(outcome.kind);
          return s;
        case 'retry': {
          s.retryCount += 1;
          s.lastError = `${outcome.resync}: ${outcome.error}`;
          const delay = backoffMs(s.retryCount, input.settings.backoff, Math.random, outcome.retryAfterMs ?? 0);
          const next = new Date(Date.now() + delay);
          s.nextRetryAt = next.toISOString();
          await recordResync(input.did, { kind: outcome.resync, count: s.retryCount, nextRetryAt: s.nextRetryAt, error: outcome.error });
          show(paused ? 'paused' : 'backoff');
          inBackoff = true;
          await condition(() => resyncNow || cancelled, delay);
          inBackoff = false;
          resyncNow = false;
          s.nextRetryAt = undefined;
          if (workflowInfo().continueAsNewSuggested) {
            await continueAsNew<typeof backfillRepo>({ did: input.did, settings: input.settings, retryCount: s.retryCount });
          }
          break;
        }
      }
    }
  } catch (err) {
    if (!isCancellation(err)) throw err;
    cancelled = true;
  }
  // Cancelled (signal or Temporal cancellation): say so where the UI and list queries look.
  await CancellationScope.nonCancellable(async () => show('cancelled'));
  return s;
}
