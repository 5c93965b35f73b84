/**
 * The body of `resyncSweep` and `goneRecheck` (one workflow each, `resync-sweep.ts` and
 * `gone-recheck.ts`): every due repo that has no running `backfill/<did>` gets one, started as
 * an abandoned child on the backfill queue; a repo whose workflow is running is skipped, one
 * whose workflow was terminated by hand gets a new run. Pages of due repos come from an
 * activity; long runs continue-as-new. Answers pause, resume, cancel and `sweepProgressQuery`.
 */
import {
  ParentClosePolicy,
  condition,
  continueAsNew,
  defineQuery,
  patched,
  proxyActivities,
  setHandler,
  startChild,
  workflowInfo,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { z } from 'zod';
import type { MaintenanceActivities } from '../activities/maintenance.ts';
import { BackfillSettings } from '../backfill/settings.ts';
import { backfillRepo } from './backfill-repo.ts';
import { handleControl } from './control.ts';
import { parseInput } from './input.ts';
import { closing, showMaintenance, type MaintenanceState } from './periodic.ts';

export { cancelSignal, pauseSignal, resumeSignal } from './control.ts';

const { dueRepos } = proxyActivities<MaintenanceActivities>({
  startToCloseTimeout: '2 minutes',
  retry: { initialInterval: '2 seconds', maximumInterval: '1 minute', maximumAttempts: 10 },
});
// A page of getRepoStatus requests, one repo after another, each heartbeated.
const { recheckGone } = proxyActivities<MaintenanceActivities>({
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '5 seconds', maximumInterval: '2 minutes', maximumAttempts: 10 },
});

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
  totals: z.object({ pages: z.number(), due: z.number(), started: z.number(), running: z.number(), stillGone: z.number().optional() }).optional(),
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
  /** Gone repos whose PDS says they are still inactive (not backfilled; re-checked later). */
  stillGone: number;
  /** The DIDs started by this run (the first 1000). */
  startedDids: string[];
}

export const sweepProgressQuery = defineQuery<SweepProgress>('progress');

/** Continue-as-new before history holds this many events (a child start costs about three). */
const HISTORY_LIMIT = 8000;

/** The sweep of `kind`: the body of `resyncSweep` and `goneRecheck`. */
export async function sweep(kind: 'resync' | 'gone', name: string, raw: SweepInput): Promise<SweepProgress> {
  const input = parseInput(SweepInput, raw, name);
  const p: SweepProgress = {
    kind,
    state: 'running',
    asOf: input.asOf ?? new Date().toISOString(),
    pages: 0,
    due: 0,
    started: 0,
    running: 0,
    ...input.totals,
    stillGone: input.totals?.stillGone ?? 0,
    startedDids: [],
  };
  let paused = false;
  let cancelled = false;
  handleControl({
    pause: () => void (paused = true),
    resume: () => void (paused = false),
    cancel: () => void (cancelled = true),
  });
  setHandler(sweepProgressQuery, () => ({ ...p, state: paused && p.state === 'running' ? 'paused' : p.state }));
  showMaintenance(name, 'running');

  return closing(name, async () => {
    let after = input.after;
    for (;;) {
      if (paused) {
        showMaintenance(name, 'paused');
        await condition(() => !paused || cancelled);
        if (!cancelled) showMaintenance(name, 'running');
      }
      if (cancelled) break;
      const left = input.maxStarts === undefined ? input.pageSize : Math.min(input.pageSize, input.maxStarts - p.started);
      if (left <= 0) break;
      const page = await dueRepos({ kind, asOf: p.asOf, after, limit: left });
      p.pages++;
      p.due += page.repos.length;
      let due = page.repos;
      // A gone repo is backfilled only when its PDS no longer says it is inactive (one small
      // request each, instead of downloading the repo to find it still gone).
      if (kind === 'gone' && due.length > 0 && patched('gone-recheck-asks-repo-status')) {
        const verdicts = await recheckGone({ dids: due.map((r) => r.did), recheckSeconds: BackfillSettings.parse(input.settings ?? {}).goneRecheckSeconds });
        const still = new Set(verdicts.filter((v) => v.verdict === 'still-gone').map((v) => v.did));
        p.stillGone += still.size;
        due = due.filter((r) => !still.has(r.did));
      }
      // One batch of starts per page: one workflow task issues them all.
      const outcomes = await Promise.all(
        due.map(async (repo) => {
          try {
            await startChild(backfillRepo, {
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
          if (p.startedDids.length < 1000) p.startedDids.push(due[i]!.did);
        }
      });
      after = page.cursor;
      if (after === undefined) break;
      const info = workflowInfo();
      if (info.continueAsNewSuggested || info.historyLength > HISTORY_LIMIT) {
        await continueAsNew<(raw: SweepInput) => Promise<SweepProgress>>({
          ...raw,
          asOf: p.asOf,
          after,
          totals: { pages: p.pages, due: p.due, started: p.started, running: p.running, stillGone: p.stillGone },
        });
      }
    }
    p.state = cancelled ? 'cancelled' : 'done';
    showMaintenance(name, p.state);
    return p;
  });
}
