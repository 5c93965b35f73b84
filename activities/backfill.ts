/**
 * Backfill activities: one repo end to end (`backfillRepoOnce`), many repos per activity for the
 * bulk path (`backfillMany`), and the sources of DIDs. The work is `backfill/pipeline.ts`; these
 * add what Temporal needs: heartbeats (bytes and repos done), cancellation, metrics, and bad
 * input as a non-retryable failure. What the PDS or the repo did wrong comes back as an outcome
 * value for the workflow to act on; only the worker's own trouble (database, blobstore) is
 * thrown, for Temporal to retry.
 */
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { JobContext } from './context.ts';
import { recordImport } from './counters.ts';
import { BackfillSettings, type RepoOutcome, type ResyncKind } from '../backfill/settings.ts';
import { backfillPipeline } from '../backfill/pipeline.ts';
import { PgHostLimits } from '../storage/db/pds-politeness.ts';
import { InvalidDidLineError, readDidPage } from '../backfill/did-file.ts';
import { markResync } from '../backfill/repo-state.ts';

export function backfillActivities({ config, stores }: JobContext) {
  // Shared (the default): per-PDS limits hold for every worker on this database, not per process.
  const sharedLimits = config.network.pdsPoliteness === 'shared' ? new PgHostLimits(stores.pool, { leaseTtlMs: config.network.pdsLeaseSeconds * 1000 }) : undefined;
  const pipeline = backfillPipeline(stores, config.network, sharedLimits);

  return {
    /** Imports one repo (`backfillRepo`'s step). Heartbeats the bytes downloaded. */
    async backfillRepoOnce(did: string, rawSettings: BackfillSettings): Promise<RepoOutcome> {
      const settings = BackfillSettings.parse(rawSettings);
      let bytes = 0;
      return withHeartbeats(
        () => ({ did, bytes }),
        async (beat) => {
          const outcome = await pipeline.backfillOne(did, settings, {
            signal: Context.current().cancellationSignal,
            onBytes: (n) => {
              bytes += n;
              beat();
            },
          });
          recordImport(outcome);
          return outcome;
        },
      );
    },

    /**
     * Imports many repos, `concurrency` at a time. Heartbeats how many are done and the bytes
     * downloaded (one big repo must not look like a dead worker); on retry it starts over, which
     * costs little: a repo already imported at its rev is skipped.
     */
    async backfillMany(dids: string[], rawSettings: BackfillSettings, concurrency: number): Promise<RepoOutcome[]> {
      const settings = BackfillSettings.parse(rawSettings);
      let done = 0;
      let bytes = 0;
      const { info } = Context.current();
      return withHeartbeats(
        () => ({ done, of: dids.length, bytes }),
        (beat) =>
          pipeline.backfillMany(dids, settings, concurrency, {
            signal: Context.current().cancellationSignal,
            // The worker's lanes go to the page the workflow scheduled first: it settles pages in
            // that order, so a later page finished first would wait for the earlier one anyway.
            order: [info.scheduledTimestampMs, Number(info.activityId) || 0],
            onBytes: (n) => {
              bytes += n;
              beat();
            },
            onOutcome: (outcome) => {
              recordImport(outcome);
              done++;
              beat();
            },
          }),
      );
    },

    async recordResync(did: string, r: { kind: ResyncKind; count: number; nextRetryAt: string; error: string }): Promise<void> {
      await markResync(stores.pool, did, { kind: r.kind, count: r.count, nextRetryAt: new Date(r.nextRetryAt), error: r.error });
    },

    /** Up to `limit` DIDs from a file (one per line; blank lines and `#` comments skipped), from line `fromLine`. */
    async didsFromFile(path: string, fromLine: number, limit: number): Promise<{ dids: string[]; nextLine: number | undefined }> {
      try {
        return await readDidPage(path, fromLine, limit);
      } catch (err) {
        // Bad input, not a passing fault: retrying cannot help.
        if (err instanceof InvalidDidLineError) throw ApplicationFailure.nonRetryable(err.message, 'InvalidInput');
        throw err;
      }
    },

    /** One page of `com.atproto.sync.listRepos`; entries with a bad DID or shape are skipped and counted. */
    async didsFromPds(pds: string, cursor: string | undefined, limit: number): Promise<{ dids: string[]; cursor: string | undefined; skipped: number }> {
      const page = await pipeline.listDids(pds, cursor, limit);
      if (page.skipped.length > 0) {
        const first = page.skipped[0]!;
        Context.current().log.warn(`listRepos on ${pds}: skipped ${page.skipped.length} bad entries (first at ${first.index}: ${first.reason})`);
      }
      return { dids: page.dids, cursor: page.cursor, skipped: page.skipped.length };
    },
  };
}

export type BackfillActivities = ReturnType<typeof backfillActivities>;

/**
 * Runs `fn`, heartbeating `details()` when it calls `beat` (at most ten times a second) and at
 * least every 10 s (every half heartbeat timeout, if that is shorter) besides: verifying and
 * importing a large repo send no bytes for a while, nor does a page waiting for the worker's
 * lanes while an older page has them, and without a heartbeat the attempt would look like a dead
 * worker and be started over.
 */
async function withHeartbeats<T>(details: () => unknown, fn: (beat: () => void) => Promise<T>): Promise<T> {
  const ctx = Context.current();
  const send = () => {
    last = performance.now();
    held = false;
    ctx.heartbeat(details());
  };
  // The SDK throttles what it sends, but each call still costs its details and a trip through
  // the SDK's pipeline: called per chunk and per repo, that was a tenth of a millisecond per
  // small repo. Ten calls a second say as much; one held back is sent at the end, so the last
  // heartbeat is the final progress.
  let last = -Infinity;
  let held = false;
  const beat = () => {
    if (performance.now() - last >= 100) send();
    else held = true;
  };
  const timeoutMs = ctx.info.heartbeatTimeoutMs;
  const timer = setInterval(send, timeoutMs ? Math.min(10_000, timeoutMs / 2) : 10_000);
  try {
    const result = await fn(beat);
    if (held) send();
    return result;
  } finally {
    clearInterval(timer);
  }
}
