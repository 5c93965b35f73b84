/**
 * Maintenance activities: thin wrappers over `maintenance/` for the periodic workflows
 * (`workflows/resync-sweep.ts`, `gone-recheck.ts`, `retention.ts`, `gc.ts`, `rotating-walk.ts`,
 * `stats.ts`). Inputs and results are plain JSON (dates as ISO strings); GC and retention take
 * their settings as the workflows parsed them (`maintenance/settings.ts`). The long ones
 * (retention, GC) heartbeat as they go and stop at a safe point when cancelled.
 */
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { JobContext } from './context.ts';
import { dueRepos, type DuePage, type SweepKind } from '../maintenance/sweep.ts';
import { trimExpiredEvents, type RetentionResult } from '../maintenance/retention.ts';
import { collectGarbage, GcBusyError, type GcReport } from '../maintenance/gc.ts';
import { claimRotation, completeRotation, InvalidRateError, type RotationState } from '../maintenance/rotation.ts';
import { collectStats, storeStats, type MirrorStats } from '../maintenance/stats.ts';
import type { GcSettings, RetentionSettings } from '../maintenance/settings.ts';
import { recheckGone, type GoneVerdict } from '../maintenance/gone-check.ts';
import { getRepoStatus, IdentityCache, Politeness, resolveDid } from '../atproto/net/index.ts';

export interface DueReposInput {
  kind: SweepKind;
  /** ISO time: repos due at or before it. */
  asOf: string;
  after?: string | undefined;
  limit: number;
}

export interface RotationInput {
  name: string;
  rate: number;
}

export interface RecheckGoneInput {
  dids: string[];
  /** When a repo still gone is asked again (the backfill settings' goneRecheckSeconds). */
  recheckSeconds: number;
}

export function maintenanceActivities({ stores, config }: Pick<JobContext, 'stores' | 'config'>) {
  const identities = new IdentityCache({ ttlMs: config.network.identityTtlSeconds * 1000 });
  const politeness = new Politeness({ concurrency: config.network.pdsConcurrency, minIntervalMs: config.network.pdsMinIntervalMs });
  const http = { allowPrivate: config.network.allowPrivateAddresses, politeness, timeoutMs: config.network.fetchTimeoutSeconds * 1000 };
  return {
    /** One page of the repos due for the resync sweep or the gone re-check. */
    async dueRepos(q: DueReposInput): Promise<DuePage> {
      return dueRepos(stores.pool, { kind: q.kind, asOf: new Date(q.asOf), after: q.after, limit: q.limit });
    },

    /**
     * The gone re-check's question for each of `dids` (maintenance/gone-check.ts): one
     * getRepoStatus at the PDS the DID names now; only the answers other than "still inactive"
     * are for backfill.
     */
    async recheckGone(q: RecheckGoneInput): Promise<GoneVerdict[]> {
      const ctx = Context.current();
      return recheckGone(
        {
          pool: stores.pool,
          recheckSeconds: q.recheckSeconds,
          onRepo: (did) => ctx.heartbeat(did),
          repoStatus: async (did) => {
            // The account may have moved: ask the PDS its DID document names now.
            identities.invalidate(did);
            const id = await resolveDid(did, { plcUrl: config.network.plcUrl, allowPrivate: config.network.allowPrivateAddresses, cache: identities, timeoutMs: 30_000, verifyHandle: false });
            return getRepoStatus(id.pds, did, http);
          },
        },
        q.dids,
      );
    },

    /** Trims expired events in batches; each batch commits, so a retry continues where the last attempt stopped. */
    async trimExpiredEvents(q: RetentionSettings): Promise<RetentionResult> {
      const ctx = Context.current();
      return trimExpiredEvents(stores.pool, {
        batchSize: q.batchSize,
        maxBatches: q.maxBatches,
        signal: ctx.cancellationSignal,
        onBatch: (p) => ctx.heartbeat(p),
      });
    },

    /** Mark, sweep, repack, blobs, orphans (`maintenance/gc.ts`). A retry starts over: the mark is not kept across attempts. */
    async collectGarbage(q: GcSettings): Promise<GcReport> {
      const ctx = Context.current();
      try {
        return await collectGarbage(
          { pool: stores.pool, blobs: stores.blobs },
          {
            ...q,
            signal: ctx.cancellationSignal,
            onProgress: (r) => ctx.heartbeat({ phase: r.phase, repos: r.mark.repos, swept: r.sweep.packs, repacked: r.repack.packs }),
            tick: () => ctx.heartbeat(),
          },
        );
      } catch (err) {
        if (err instanceof RangeError) throw ApplicationFailure.nonRetryable(err.message, 'InvalidInput');
        if (err instanceof GcBusyError) throw ApplicationFailure.retryable(err.message, 'GcBusy');
        throw err;
      }
    },

    /** The offset the next run of a rotating walk samples. */
    async claimRotation(q: RotationInput): Promise<{ offset: number; rate: number; cycle: number; runs: number }> {
      try {
        return await claimRotation(stores.pool, q.name, q.rate);
      } catch (err) {
        if (err instanceof InvalidRateError) throw ApplicationFailure.nonRetryable(err.message, 'InvalidInput');
        throw err;
      }
    },

    /** Advances a rotating walk's offset after the run at `offset` completed (idempotent). */
    async completeRotation(q: RotationInput & { offset: number; walkId: string }): Promise<RotationState> {
      return completeRotation(stores.pool, q.name, q.rate, q.offset, q.walkId);
    },

    /** Counts the mirror and stores the counts in job_state 'stats'. */
    async collectStats(): Promise<MirrorStats> {
      const stats = await collectStats(stores.pool);
      await storeStats(stores.pool, stats);
      return stats;
    },
  };
}

export type MaintenanceActivities = ReturnType<typeof maintenanceActivities>;
