/**
 * Live sync activities: `subscribeRun` follows one upstream for a while (sync/consumer.ts does
 * the work), heartbeating its progress; the cursor lives in PostgreSQL, committed with the events
 * it covers, so a retried or restarted run reads it back and resumes right after the last applied
 * frame. Cancellation (pause, stop) is a normal end: the run returns what it did.
 */
import { Context } from '@temporalio/activity';
import type { JobContext } from './context.ts';
import { startBackfillRepo } from '../client/backfill-repo.ts';
import { recordSyncProgress } from './sync-counters.ts';
import { BackfillSettings, type BackfillSettingsInput } from '../backfill/settings.ts';
import { IdentityCache, resolveDid } from '../atproto/net/index.ts';
import { runSubscription, readCursor } from '../sync/consumer.ts';
import { refreshRepo, storedHead, type RefreshOutcome } from '../sync/refresh.ts';
import { NetError, Politeness } from '../atproto/net/index.ts';
import type { SyncProgress } from '../sync/progress.ts';

export interface SubscribeRunInput {
  host: string;
  settings: BackfillSettings;
  /** Where `backfillRepo` runs (the backfill job's task queue): gaps are resynced there. */
  backfillTaskQueue: string;
  runForSeconds: number;
  maxBatch: number;
}

export interface RefreshPageInput {
  /** Page after this DID (exclusive). */
  after: string | undefined;
  limit: number;
  settings: BackfillSettings;
  backfillTaskQueue: string;
  /** PDS origins a subscription covers, besides those with a cursor moved in the last 10 minutes. */
  coveredPds: string[];
}

export interface RefreshPageResult {
  outcomes: Record<string, number>;
  backfills: number;
  next: string | undefined;
}

export function syncActivities({ config, stores }: JobContext) {
  const identities = new IdentityCache({ ttlMs: config.network.identityTtlSeconds * 1000 });
  const politeness = new Politeness({ concurrency: config.network.pdsConcurrency, minIntervalMs: config.network.pdsMinIntervalMs });
  const startBackfill = (did: string, settings: BackfillSettingsInput, taskQueue: string, reason: string) =>
    // One resync at a time per repo: a running one will land the newest state.
    startBackfillRepo(Context.current().client, { did, settings, taskQueue, reason, ifRunning: 'leave' });
  return {
    /**
     * Refreshes one page of active repos that no subscription covers (`getLatestCommit`, then
     * `getRepo?since=` only when the rev moved); a repo the incremental path cannot complete, or
     * whose PDS answers with an error, goes to a full backfill.
     */
    async refreshPage(input: RefreshPageInput): Promise<RefreshPageResult> {
      const settings = BackfillSettings.parse(input.settings);
      const { rows } = await stores.pool.query<{ did: string; pds: string | null }>(
        `SELECT did, pds FROM repos WHERE status = 'active' AND head_cid IS NOT NULL AND ($1::text IS NULL OR did > $1) ORDER BY did LIMIT $2`,
        [input.after ?? null, input.limit],
      );
      const fresh = await stores.pool.query<{ key: string }>(`SELECT key FROM job_state WHERE key LIKE 'sync/cursor/%' AND updated_at > now() - interval '10 minutes'`);
      const coveredHosts = new Set([...fresh.rows.map((r) => r.key.slice('sync/cursor/'.length)), ...input.coveredPds.map((p) => new URL(p).host)]);
      const outcomes: Record<string, number> = {};
      let backfills = 0;
      for (const row of rows) {
        Context.current().heartbeat(row.did);
        if (row.pds && coveredHosts.has(new URL(row.pds).host)) {
          outcomes.covered = (outcomes.covered ?? 0) + 1;
          continue;
        }
        const head = await storedHead(stores.pool, row.did);
        if (!head) continue;
        let o: RefreshOutcome;
        try {
          o = await refreshRepo(stores, head, {
            filter: settings.filter,
            ephemeralRetentionSeconds: settings.ephemeralRetentionSeconds,
            maxCarBytes: settings.maxCarBytes,
            http: { allowPrivate: config.network.allowPrivateAddresses, politeness, timeoutMs: config.network.fetchTimeoutSeconds * 1000 },
          });
        } catch (err) {
          // Gone, deleted, rate-limited or unreachable: backfill knows each of these states.
          if (!(err instanceof NetError)) throw err;
          o = { did: row.did, kind: 'needs-backfill', reason: err.message };
        }
        outcomes[o.kind] = (outcomes[o.kind] ?? 0) + 1;
        if (o.kind === 'needs-backfill') {
          backfills++;
          await startBackfill(row.did, settings, input.backfillTaskQueue, `refresh: ${o.reason}`);
        }
      }
      return { outcomes, backfills, next: rows.length < input.limit ? undefined : rows[rows.length - 1]!.did };
    },

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
          goneRecheckSeconds: settings.goneRecheckSeconds,
          maxBatch: input.maxBatch,
          verifyThreads: config.worker.syncVerifyThreads,
          runForMs: input.runForSeconds * 1000,
          signal: ctx.cancellationSignal,
          resolve: (did, fresh) => {
            if (fresh) identities.invalidate(did);
            return resolveDid(did, { plcUrl: config.network.plcUrl, allowPrivate: config.network.allowPrivateAddresses, cache: identities, timeoutMs: 30_000, ...(config.network.verifyHandles ? {} : { verifyHandle: false }) });
          },
          requestResync: async (did, reason) => void (await startBackfill(did, input.settings, input.backfillTaskQueue, `live sync: ${reason}`)),
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
