/**
 * One repo end to end: resolve its DID, fetch its CAR from the PDS the DID document names,
 * verify it, import it, mirror its blobs, and map what happened to a `RepoOutcome`. What the PDS
 * or the repo did wrong comes back as an outcome (gone, deleted, retry with a resync kind); only
 * the worker's own trouble (database, blobstore), cancellation and bugs are thrown.
 *
 * Knows nothing of Temporal: the backfill activities (`activities/backfill.ts`) call it with an
 * abort signal and progress hooks, and heartbeat from those.
 */
import type pg from 'pg';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { verifyRepoStream, type VerifiedRepo } from '../atproto/verify.ts';
import { InvalidRepoError } from '../atproto/errors.ts';
import {
  IdentityCache,
  resolveDid,
  openRepo,
  listRepos,
  Politeness,
  outcomeOf,
  checkHostAllowed,
  ForbiddenAddressError,
  NetError,
  RepoGoneError,
  RepoNotFoundError,
  type SkippedListing,
  type AtprotoIdentity,
} from '../atproto/net/index.ts';
import type { SharedHostLimits } from '../atproto/net/politeness.ts';
import type { BackfillSettings, RepoOutcome } from './settings.ts';
import { importRepo, importThrough, dropRepo, recordFilter } from './import.ts';
import { StoreBatcher } from '../ingest/batcher.ts';
import { markGone } from './repo-state.ts';
import { mirrorBlobs } from './blobs.ts';
import { mark } from '../ingest/timeline.ts';
import { LanePool } from './lanes.ts';

/** How the pipeline reaches the network (the `network.*` options). */
export interface PipelineNetwork {
  plcUrl: string;
  allowPrivateAddresses: boolean;
  identityTtlSeconds: number;
  /** Requests in flight to one PDS host. */
  pdsConcurrency: number;
  pdsMinIntervalMs: number;
  /** Timeout of one repo or blob download. */
  fetchTimeoutSeconds: number;
  /** Total time one remote read may take (http.ts `deadlineMs`). */
  fetchDeadlineSeconds: number;
  /** Least average rate a large body must keep past the deadline (http.ts `minBytesPerSecond`). */
  fetchMinBytesPerSecond: number;
  /** Check each DID document's handle both ways (atproto/net/handle.ts); off, it is taken as claimed. */
  verifyHandles: boolean;
}

export interface AttemptHooks {
  /** Stops the attempt at its next safe point; nothing of a half-read CAR is stored. */
  signal: AbortSignal;
  /** Bytes of the CAR as they arrive. */
  onBytes?: ((n: number) => void) | undefined;
  /** Store through this shared batcher (many repos per pack and transaction) rather than alone. */
  batcher?: StoreBatcher | undefined;
}

export interface ManyHooks extends AttemptHooks {
  /** After each repo, with its outcome. */
  onOutcome?: ((outcome: RepoOutcome) => void) | undefined;
  /** Where this page stands among the pages run at once on this pipeline, lower first (lanes.ts `nextPage`). */
  order?: readonly number[] | undefined;
}

/** A repo resolved, fetched and verified, not yet stored. */
interface Fetched {
  id: AtprotoIdentity;
  repo: VerifiedRepo;
}

/**
 * The bulk path's batches: up to this many repos, or this many blocks, per pack and transaction,
 * a batch that is not full waiting up to `gatherMs` for more. Small repos make batches of
 * hundreds, where a repo's share of each statement, round trip and commit becomes small (the
 * store path's CPU per small repo, worker and PostgreSQL, is about 1.9 ms in batches of 8,
 * 0.75 in batches of 74 and 0.5 in batches of 250); a large repo fills a batch by its blocks.
 * The lanes do not wait for their repos to be stored, so the wait costs no throughput; the end
 * of a page stores what is left at once. Two batches are stored at once, so a batch no longer
 * grows while it waits behind the one in flight: gathering 250 ms, a loaded machine made 13–17
 * batches of 2,000 small repos (8–10 with one in flight); gathering 500 ms, 9–10.
 */
const BULK_BATCH_LIMITS = { maxChanges: 256, maxBlocks: 50_000, gatherMs: 500, maxInFlight: 2 };

export interface BackfillPipeline {
  /** One attempt at one repo. */
  backfillOne(did: string, settings: BackfillSettings, hooks: AttemptHooks): Promise<RepoOutcome>;
  /**
   * Many repos, `concurrency` at a time (lanes shared with the other pages this pipeline runs at
   * once, the oldest page first); outcomes in the order of `dids`. Stops starting repos
   * once `hooks.signal` is aborted and then throws its reason.
   */
  backfillMany(dids: readonly string[], settings: BackfillSettings, concurrency: number, hooks: ManyHooks): Promise<RepoOutcome[]>;
  /** One page of `com.atproto.sync.listRepos` of a PDS, through the same politeness. */
  listDids(pds: string, cursor: string | undefined, limit: number): Promise<{ dids: string[]; cursor: string | undefined; skipped: SkippedListing[] }>;
}

/**
 * A pipeline with its own identity cache and per-host politeness, shared by every repo it
 * backfills (one per worker process and job). With `sharedLimits`, the politeness holds across
 * every worker that shares that store, not only within this process.
 */
export function backfillPipeline(stores: { pool: pg.Pool; blobs: BlobStore }, network: PipelineNetwork, sharedLimits?: SharedHostLimits): BackfillPipeline {
  const identities = new IdentityCache({ ttlMs: network.identityTtlSeconds * 1000 });
  const politeness = new Politeness({ concurrency: network.pdsConcurrency, minIntervalMs: network.pdsMinIntervalMs }, sharedLimits);
  const allowPrivate = network.allowPrivateAddresses;
  const timeoutMs = network.fetchTimeoutSeconds * 1000;
  // Every remote read gets the same total deadline and minimum rate (see atproto/net/http.ts).
  const deadline = { deadlineMs: network.fetchDeadlineSeconds * 1000, minBytesPerSecond: network.fetchMinBytesPerSecond };
  // Shared by the bulk pages this process runs at once, the oldest first (see lanes.ts).
  const lanes = new LanePool();

  // The PLC directory is the operator's choice, not network input: one configured on a private
  // or loopback address (a PLC mirror on the LAN, a test PLC) is used as configured, even where
  // private addresses are refused. A public one (plc.directory) stays under the guard, so that it
  // cannot redirect a worker into its own network. Every PDS a DID document names, and every
  // did:web host, stays under the guard too.
  let plcOnPrivateAddress: Promise<boolean> | undefined;
  function plcAllowsPrivate(): Promise<boolean> {
    if (allowPrivate) return Promise.resolve(true);
    plcOnPrivateAddress ??= checkHostAllowed(network.plcUrl, { allowPrivate: false }).then(
      () => false,
      (err: unknown) => {
        if (err instanceof ForbiddenAddressError && err.address !== undefined) return true;
        plcOnPrivateAddress = undefined; // a name that did not resolve: ask again next time
        return false;
      },
    );
    return plcOnPrivateAddress;
  }

  /** Resolves the DID and fetches and verifies its repo: the half of an attempt that needs no lock. */
  async function fetchVerified(did: string, settings: BackfillSettings, { signal, onBytes, batcher }: AttemptHooks): Promise<Fetched> {
    // Each backfill reads the DID document afresh (a key rotation or PDS move is seen at once) and
    // keeps it nowhere; the cache keeps the handle checks.
    const resolveAllowsPrivate = did.startsWith('did:plc:') ? await plcAllowsPrivate() : allowPrivate;
    const id = await resolveDid(did, { plcUrl: network.plcUrl, allowPrivate: resolveAllowsPrivate, cache: identities, fresh: true, timeoutMs: 30_000, ...deadline, signal, ...(network.verifyHandles ? {} : { verifyHandle: false }) });
    // The body itself, not getRepo's lazy generator around it: one async generator less per chunk.
    const body = await openRepo(id.pds, did, { maxBytes: settings.maxCarBytes, timeoutMs, ...deadline, politeness, allowPrivate, onBytes, signal });
    // A repo stored alone (not batched) has its blocks' hashes checked while its transaction waits
    // for PostgreSQL, and before it commits (importRepo awaits them); a batched one is checked
    // whole before it joins a batch, so deferring would gain nothing there.
    // The key as the DID document's reader decoded it: not decoded again to check the signature.
    const signingKey = { didKey: id.signingKey, type: id.signingKeyType, point: id.signingKeyPoint };
    const repo = await verifyRepoStream(body, { did, signingKey, caps: { maxBytes: settings.maxCarBytes }, deferBlockHashes: !batcher });
    return { id, repo };
  }

  /** Stores a verified repo (alone, or in the batcher's next batch) and mirrors its blobs. */
  async function store(did: string, { id, repo }: Fetched, settings: BackfillSettings, { signal, batcher }: AttemptHooks): Promise<RepoOutcome> {
    const result = batcher
      ? await importThrough(batcher, { repo, pds: id.pds, handle: id.handle, signingKey: id.signingKey, filter: settings.filter })
      : await importRepo(stores, {
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
  }

  /**
   * What the PDS or the repo did wrong, as the repo's outcome. Anything else (the database, the
   * blobstore, cancellation, a bug) is thrown for the caller to retry or stop.
   */
  async function outcomeOfFailure(did: string, err: unknown, settings: BackfillSettings, signal: AbortSignal): Promise<RepoOutcome> {
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
    if (err instanceof NetError && !signal.aborted) {
      const o = outcomeOf(err);
      if (o.kind === 'rate-limited' || o.kind === 'transport' || o.kind === 'error') {
        return { did, kind: 'retry', resync: o.kind, error: o.message, retryAfterMs: o.kind === 'rate-limited' ? o.retryAfterMs : undefined };
      }
    }
    throw err;
  }

  async function backfillOne(did: string, settings: BackfillSettings, hooks: AttemptHooks): Promise<RepoOutcome> {
    try {
      return await store(did, await fetchVerified(did, settings, hooks), settings, hooks);
    } catch (err) {
      return outcomeOfFailure(did, err, settings, hooks.signal);
    }
  }

  async function backfillMany(dids: readonly string[], settings: BackfillSettings, concurrency: number, hooks: ManyHooks): Promise<RepoOutcome[]> {
    const { signal } = hooks;
    const page = lanes.nextPage(hooks.order);
    const pageNo = page.at(-1)!;
    mark('page-start', dids.length, pageNo);
    const out: RepoOutcome[] = new Array(dids.length);
    // The lanes fetch and verify concurrently and hand each verified repo to the batcher without
    // waiting for it to be stored: a lane goes on to its next repo while the batch it joined is
    // written, so batches hold what every lane verified meanwhile (many repos per pack and
    // transaction, however few the lanes). Each repo's outcome is still its own.
    const batcher = new StoreBatcher(
      stores,
      { filter: recordFilter(settings.filter), ephemeralRetentionSeconds: settings.ephemeralRetentionSeconds, origin: 'backfill' },
      BULK_BATCH_LIMITS,
    );
    const storing: Promise<void>[] = [];
    let failure: { err: unknown } | undefined;
    const settle = (i: number, outcome: RepoOutcome) => {
      out[i] = outcome;
      hooks.onOutcome?.(outcome);
    };
    let next = 0;
    // A lane holds one of the worker's lanes from repo to repo while its page has DIDs left; it
    // gives it up while it waits for room in the batcher, and after a repo when an older page is
    // waiting, so that the oldest page runs on every lane it can use.
    const lane = async () => {
      let held = false;
      const release = () => {
        held = false;
        lanes.release();
        mark('lanes', lanes.busy);
      };
      try {
        while (next < dids.length && !signal.aborted && !failure) {
          if (!held) {
            if (!(await lanes.acquire(page, concurrency, signal))) break;
            held = true;
            mark('lanes', lanes.busy);
            if (next >= dids.length || failure) break;
          }
          const i = next++;
          const did = dids[i]!;
          let fetched: Fetched;
          try {
            // With the batcher named, the repo is verified whole here, blocks' hashes too: a lane
            // does not go on to its next repo while this one's checks are still pending.
            fetched = await fetchVerified(did, settings, { ...hooks, batcher });
          } catch (err) {
            settle(i, await outcomeOfFailure(did, err, settings, signal));
            if (lanes.olderWaiting(page)) release();
            continue;
          }
          const stored = store(did, fetched, settings, { ...hooks, batcher })
            .catch((err: unknown) => outcomeOfFailure(did, err, settings, signal))
            .then(
              (outcome) => settle(i, outcome),
              (err: unknown) => void (failure ??= { err }),
            );
          storing.push(stored);
          // Verified repos waiting for a batch hold their bytes: a lane waits while a full batch does.
          if (!batcher.hasRoom()) {
            release();
            await batcher.room();
          } else if (lanes.olderWaiting(page)) release();
        }
      } finally {
        if (held) release();
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, dids.length) }, lane)).finally(() => batcher.endOfInput());
    mark('page-lanes-done', dids.length, pageNo);
    await Promise.all(storing);
    mark('page-end', dids.length, pageNo);
    if (failure) throw failure.err;
    if (signal.aborted) throw signal.reason ?? new Error('cancelled');
    return out;
  }

  async function listDids(pds: string, cursor: string | undefined, limit: number): Promise<{ dids: string[]; cursor: string | undefined; skipped: SkippedListing[] }> {
    const page = await listRepos(pds, { cursor, limit, allowPrivate, politeness, ...deadline });
    return { dids: page.repos.map((r) => r.did), cursor: page.cursor, skipped: page.skipped };
  }

  return { backfillOne, backfillMany, listDids };
}
