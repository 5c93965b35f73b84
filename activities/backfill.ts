/**
 * Backfill activities: one repo end to end (resolve, fetch, verify, import), many repos per
 * activity for the bulk path, and the sources of DIDs. What the PDS or the repo did wrong comes
 * back as an outcome value for the workflow to act on; only the worker's own trouble (database,
 * blobstore) is thrown, for Temporal to retry.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { Context } from '@temporalio/activity';
import type { JobContext } from '../workers/jobs.ts';
import { recordImport } from '../workers/metrics.ts';
import { ApplicationFailure } from '@temporalio/common';
import { BackfillSettings, Did, type RepoOutcome, type ResyncKind } from '../backfill/settings.ts';
import { importRepo, dropRepo } from '../backfill/import.ts';
import { markGone, markResync } from '../backfill/repo-state.ts';
import { mirrorBlobs } from '../backfill/blobs.ts';
import { verifyRepoStream } from '../atproto/verify.ts';
import { InvalidRepoError } from '../atproto/errors.ts';
import {
  IdentityCache,
  resolveDid,
  getRepo,
  listRepos,
  Politeness,
  outcomeOf,
  checkHostAllowed,
  ForbiddenAddressError,
  NetError,
  RepoGoneError,
  RepoNotFoundError,
} from '../atproto/net/index.ts';

export function backfillActivities({ config, stores }: JobContext) {
  const identities = new IdentityCache({ ttlMs: config.network.identityTtlSeconds * 1000 });
  const politeness = new Politeness({ concurrency: config.network.pdsConcurrency, minIntervalMs: config.network.pdsMinIntervalMs });
  const allowPrivate = config.network.allowPrivateAddresses;
  const timeoutMs = config.network.fetchTimeoutSeconds * 1000;
  // Every remote read gets the same total deadline and minimum rate (see http.ts).
  const deadline = { deadlineMs: config.network.fetchDeadlineSeconds * 1000, minBytesPerSecond: config.network.fetchMinBytesPerSecond };

  // The PLC directory is the operator's choice, not network input: one configured on a private
  // or loopback address (a PLC mirror on the LAN, a test PLC) is used as configured, even where
  // private addresses are refused. A public one (plc.directory) stays under the guard, so that it
  // cannot redirect a worker into its own network. Every PDS a DID document names, and every
  // did:web host, stays under the guard too.
  let plcOnPrivateAddress: Promise<boolean> | undefined;
  function plcAllowsPrivate(): Promise<boolean> {
    if (allowPrivate) return Promise.resolve(true);
    plcOnPrivateAddress ??= checkHostAllowed(config.network.plcUrl, { allowPrivate: false }).then(
      () => false,
      (err: unknown) => {
        if (err instanceof ForbiddenAddressError && err.address !== undefined) return true;
        plcOnPrivateAddress = undefined; // a name that did not resolve: ask again next time
        return false;
      },
    );
    return plcOnPrivateAddress;
  }

  /** One attempt at one repo, counted in the worker's metrics by outcome. */
  async function once(did: string, settings: BackfillSettings, signal: AbortSignal, onBytes?: (n: number) => void): Promise<RepoOutcome> {
    const outcome = await attempt(did, settings, signal, onBytes);
    recordImport(outcome);
    return outcome;
  }

  async function attempt(did: string, settings: BackfillSettings, signal: AbortSignal, onBytes?: (n: number) => void): Promise<RepoOutcome> {
    try {
      identities.invalidate(did);
      const resolveAllowsPrivate = did.startsWith('did:plc:') ? await plcAllowsPrivate() : allowPrivate;
      const id = await resolveDid(did, { plcUrl: config.network.plcUrl, allowPrivate: resolveAllowsPrivate, cache: identities, timeoutMs: 30_000, ...deadline, signal });
      const body = getRepo(id.pds, did, { maxBytes: settings.maxCarBytes, timeoutMs, ...deadline, politeness, allowPrivate, onBytes, signal });
      const repo = await verifyRepoStream(body, { did, signingKey: id.signingKey, caps: { maxBytes: settings.maxCarBytes } });
      const result = await importRepo(stores, {
        repo,
        pds: id.pds,
        handle: id.handle,
        signingKey: id.signingKey,
        filter: settings.filter,
        ephemeralRetentionSeconds: settings.ephemeralRetentionSeconds,
      });
      switch (result.kind) {
        case 'skipped':
          // Nothing new in the repo, but its blobs may still be wanting: mirroring was just turned
          // on, an earlier attempt died between the import's commit and its blobs, or the PDS
          // failed to serve one before. Only the blobs not yet present are fetched.
          if (settings.blobs) await mirrorBlobs(stores, { did, pds: id.pds, repo, filter: settings.filter, politeness, allowPrivate, timeoutMs, signal });
          return { did, kind: 'skipped', rev: result.rev };
        case 'dropped':
          return { did, kind: 'dropped', reason: result.reason };
        case 'imported': {
          const blobs = settings.blobs
            ? await mirrorBlobs(stores, { did, pds: id.pds, repo, filter: settings.filter, politeness, allowPrivate, timeoutMs, signal })
            : { stored: 0, missing: 0 };
          const { kind: _k, did: _d, packKey: _p, ...counts } = result;
          return { did, kind: 'imported', ...counts, blobs: blobs.stored, missingBlobs: blobs.missing };
        }
      }
    } catch (err) {
      if (err instanceof RepoGoneError) {
        await markGone(stores.pool, did, {
          status: err.status,
          recheckAt: new Date(Date.now() + settings.goneRecheckSeconds * 1000),
          detail: err.message,
        });
        return { did, kind: 'gone', status: err.status };
      }
      if (err instanceof RepoNotFoundError) {
        await dropRepo(stores.pool, did, 'deleted', { reason: err.message });
        return { did, kind: 'deleted' };
      }
      if (err instanceof InvalidRepoError) return { did, kind: 'retry', resync: 'error', error: err.message };
      // Only what the network or the PDS did is the repo's outcome. Anything else (the database,
      // the blobstore, cancellation, a bug) is thrown for Temporal to retry or stop.
      if (err instanceof NetError && !signal.aborted) {
        const o = outcomeOf(err);
        if (o.kind === 'rate-limited' || o.kind === 'transport' || o.kind === 'error') {
          return { did, kind: 'retry', resync: o.kind, error: o.message, retryAfterMs: o.kind === 'rate-limited' ? o.retryAfterMs : undefined };
        }
      }
      throw err;
    }
  }

  return {
    /** Imports one repo (`backfillRepo`'s step). Heartbeats the bytes downloaded. */
    async backfillRepoOnce(did: string, rawSettings: BackfillSettings): Promise<RepoOutcome> {
      const settings = BackfillSettings.parse(rawSettings);
      let bytes = 0;
      return withHeartbeats(
        () => ({ did, bytes }),
        (beat) =>
          once(did, settings, Context.current().cancellationSignal, (n) => {
            bytes += n;
            beat();
          }),
      );
    },

    /**
     * Imports many repos, `concurrency` at a time. Heartbeats how many are done and the bytes
     * downloaded (one big repo must not look like a dead worker); on retry it starts over, which
     * costs little: a repo already imported at its rev is skipped.
     */
    async backfillMany(dids: string[], rawSettings: BackfillSettings, concurrency: number): Promise<RepoOutcome[]> {
      const settings = BackfillSettings.parse(rawSettings);
      const out: RepoOutcome[] = new Array(dids.length);
      let next = 0;
      let done = 0;
      let bytes = 0;
      const signal = Context.current().cancellationSignal;
      await withHeartbeats(
        () => ({ done, of: dids.length, bytes }),
        async (beat) => {
          const lane = async () => {
            while (next < dids.length && !signal.aborted) {
              const i = next++;
              out[i] = await once(dids[i]!, settings, signal, (n) => {
                bytes += n;
                beat();
              });
              done++;
              beat();
            }
          };
          await Promise.all(Array.from({ length: Math.min(concurrency, dids.length) }, lane));
        },
      );
      if (signal.aborted) throw Context.current().cancellationSignal.reason ?? new Error('cancelled');
      return out;
    },

    async recordResync(did: string, r: { kind: ResyncKind; count: number; nextRetryAt: string; error: string }): Promise<void> {
      await markResync(stores.pool, did, { kind: r.kind, count: r.count, nextRetryAt: new Date(r.nextRetryAt), error: r.error });
    },

    /** Up to `limit` DIDs from a file (one per line; blank lines and `#` comments skipped), from line `fromLine`. */
    async didsFromFile(path: string, fromLine: number, limit: number): Promise<{ dids: string[]; nextLine: number | undefined }> {
      const rl = createInterface({ input: createReadStream(path, 'utf8'), crlfDelay: Infinity });
      const dids: string[] = [];
      let line = 0;
      try {
        for await (const raw of rl) {
          line++;
          if (line <= fromLine) continue;
          const text = raw.trim();
          if (text === '' || text.startsWith('#')) continue;
          if (!Did.safeParse(text).success) {
            // Bad input, not a passing fault: retrying cannot help.
            throw ApplicationFailure.nonRetryable(`${path}:${line}: not a did:plc or did:web DID: ${JSON.stringify(text.slice(0, 100))}`, 'InvalidInput');
          }
          dids.push(text);
          if (dids.length >= limit) return { dids, nextLine: line };
        }
      } finally {
        rl.close();
      }
      return { dids, nextLine: undefined };
    },

    /** One page of `com.atproto.sync.listRepos`; entries with a bad DID are skipped and counted. */
    async didsFromPds(pds: string, cursor: string | undefined, limit: number): Promise<{ dids: string[]; cursor: string | undefined; skipped: number }> {
      const page = await listRepos(pds, { cursor, limit, allowPrivate, politeness, ...deadline });
      if (page.skipped.length > 0) {
        const first = page.skipped[0]!;
        Context.current().log.warn(`listRepos on ${pds}: skipped ${page.skipped.length} bad entries (first at ${first.index}: ${first.reason})`);
      }
      return { dids: page.repos.map((r) => r.did), cursor: page.cursor, skipped: page.skipped.length };
    },
  };
}

export type BackfillActivities = ReturnType<typeof backfillActivities>;

/**
 * Runs `fn`, heartbeating `details()` whenever it calls `beat` (the SDK throttles them) and at
 * least every 10 s besides: verifying and importing a large repo send no bytes for a while, and
 * without a heartbeat the attempt would look like a dead worker and be started over.
 */
async function withHeartbeats<T>(details: () => unknown, fn: (beat: () => void) => Promise<T>): Promise<T> {
  const ctx = Context.current();
  const beat = () => ctx.heartbeat(details());
  const timer = setInterval(beat, 10_000);
  try {
    return await fn(beat);
  } finally {
    clearInterval(timer);
  }
}
