/**
 * Live sync activities: `subscribeRun` follows one upstream for a while (sync/consumer.ts does
 * the work), heartbeating its progress; the cursor lives in PostgreSQL, committed with the events
 * it covers, so a retried or restarted run reads it back and resumes right after the last applied
 * frame. Cancellation (pause, stop) is a normal end: the run returns what it did.
 */
import { Context } from '@temporalio/activity';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import type { JobContext } from '../workers/jobs.ts';
import { recordSyncProgress } from '../workers/sync-metrics.ts';
import { BackfillSettings } from '../backfill/settings.ts';
import { IdentityCache, resolveDid } from '../atproto/net/index.ts';
import { runSubscription, readCursor } from '../sync/consumer.ts';
import type { SyncProgress } from '../sync/progress.ts';
import type { backfillRepo } from '../workflows/backfill-repo.ts';

export interface SubscribeRunInput {
  host: string;
  settings: BackfillSettings;
  /** Where `backfillRepo` runs (the backfill job's task queue): gaps are resynced there. */
  backfillTaskQueue: string;
  runForSeconds: number;
  maxBatch: number;
}

export function syncActivities({ config, stores }: JobContext) {
  const identities = new IdentityCache({ ttlMs: config.network.identityTtlSeconds * 1000 });
  return {
    async subscribeRun(input: SubscribeRunInput): Promise<SyncProgress> {
      const ctx = Context.current();
      const settings = BackfillSettings.parse(input.settings);
      let last: SyncProgress | undefined;
      const beat = () => last && ctx.heartbeat(last);
      const timer = setInterval(beat, 5_000);
      try {
        return await runSubscription({
          host: input.host,
          stores,
          filter: settings.filter,
          ephemeralRetentionSeconds: settings.ephemeralRetentionSeconds,
          maxBatch: input.maxBatch,
          runForMs: input.runForSeconds * 1000,
          signal: ctx.cancellationSignal,
          resolve: (did, fresh) => {
            if (fresh) identities.invalidate(did);
            return resolveDid(did, { plcUrl: config.network.plcUrl, allowPrivate: config.network.allowPrivateAddresses, cache: identities, timeoutMs: 30_000 });
          },
          requestResync: async (did, reason) => {
            try {
              await ctx.client.workflow.start<typeof backfillRepo>('backfillRepo', {
                workflowId: `backfill/${did}`,
                taskQueue: input.backfillTaskQueue,
                args: [{ did, settings: input.settings }],
                memo: { reason: `live sync: ${reason.slice(0, 500)}` },
              });
            } catch (err) {
              // One resync at a time per repo: the running one will land the newest state.
              if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
            }
          },
          onProgress: (p) => {
            recordSyncProgress(p);
            last = p;
            ctx.heartbeat(p);
          },
          log: (l) => ctx.log.info(l),
        });
      } finally {
        clearInterval(timer);
      }
    },

    /** The committed cursor of `host` (for status without a running subscription). */
    async syncCursor(host: string): Promise<number | undefined> {
      return readCursor(stores.pool, host);
    },
  };
}

export type SyncActivities = ReturnType<typeof syncActivities>;
