/**
 * Starting one repo's `backfill/<did>` from outside a workflow (live sync's resync requests and
 * refresh, serve's admin resync): one copy of the rule for a repo whose workflow is running
 * already — one resync at a time per repo — and typed arguments (the workflow function, not
 * its name).
 */
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { BackfillSettingsInput } from '../backfill/settings.ts';
import { backfillRepo, resyncNowSignal } from '../workflows/backfill-repo.ts';

export interface StartBackfillRepo {
  did: string;
  settings: BackfillSettingsInput;
  /** The backfill job's task queue. */
  taskQueue: string;
  /** Why, for people: the run's summary in the Web UI (at most 500 characters are kept). */
  reason: string;
  /**
   * A running one is left alone (`leave`: it will land the newest state), or told to try now
   * (`resync-now`: an operator asked, so a wait in backoff ends).
   */
  ifRunning: 'leave' | 'resync-now';
}

export async function startBackfillRepo(client: Client, s: StartBackfillRepo): Promise<'started' | 'running' | 'signalled'> {
  const workflowId = `backfill/${s.did}`;
  if (s.ifRunning === 'resync-now') {
    const handle = client.workflow.getHandle(workflowId);
    try {
      if ((await handle.describe()).status.name === 'RUNNING') {
        await handle.signal(resyncNowSignal);
        return 'signalled';
      }
    } catch (err) {
      if (!(err instanceof WorkflowNotFoundError)) throw err;
    }
  }
  try {
    await client.workflow.start(backfillRepo, {
      workflowId,
      taskQueue: s.taskQueue,
      args: [{ did: s.did, settings: s.settings }],
      staticSummary: s.reason.slice(0, 500),
      memo: { reason: s.reason.slice(0, 500) },
    });
    return 'started';
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    return 'running';
  }
}
