/**
 * Stores one verified repo: a batch of one on the shared store path (`ingest/store.ts`, which
 * states the invariants: pack before COMMIT, GC's lock held shared, refcounts, idempotent
 * retries, per-repo order). The bulk backfill and live sync store many repos per batch through
 * the same path.
 */
import type pg from 'pg';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { withTransaction } from '../storage/db/pool.ts';
import { EVENT_WRITER } from '../storage/event-horizon.ts';
import type { VerifiedRepo } from '../atproto/verify.ts';
import { collectionFilter, type FilterOptions } from './filters.ts';
import { storeBatch } from '../ingest/store.ts';
import type { StoreBatcher } from '../ingest/batcher.ts';
import type { ChangeOutcome, RecordFilter } from '../ingest/changes.ts';
import { RefDeltas } from '../storage/refcounts.ts';
import { wipeRepoRows } from '../ingest/wipe.ts';

export interface ImportDeps {
  pool: pg.Pool;
  blobs: BlobStore;
}

export interface ImportInput {
  repo: VerifiedRepo;
  pds: string;
  handle: string | undefined;
  signingKey: string;
  filter: FilterOptions;
  /** Ephemeral mode: keep events (for this long), not the record index. */
  ephemeralRetentionSeconds?: number | undefined;
  /** Called after each step with its name, for benchmarks. */
  trace?: (step: string) => void;
}

export interface ImportCounts {
  created: number;
  updated: number;
  deleted: number;
  unchanged: number;
  newBlocks: number;
  packBytes: number;
}

export type ImportResult =
  | ({ kind: 'imported'; did: string; rev: string; packKey: string | undefined } & ImportCounts)
  | { kind: 'skipped'; did: string; rev: string; storedRev: string }
  | { kind: 'dropped'; did: string; rev: string; reason: string };

/** The store path's record filter for backfill's filter options. */
export function recordFilter(opts: FilterOptions): RecordFilter {
  return { ...collectionFilter(opts), dropsRepos: opts.mode === 'filter' && opts.signal.length > 0 };
}

/**
 * Stores one verified repo. A repo verified with `deferBlockHashes` has its blocks' hashes
 * checked while the store path works (its database steps leave this thread idle) and awaited
 * before COMMIT: a block that does not hash to its CID rolls the transaction back and is thrown,
 * ahead of any other failure, as verify would have thrown it. (The pack may have reached the
 * blobstore by then: an unreferenced pack, garbage for GC.)
 */
export async function importRepo(deps: ImportDeps, input: ImportInput): Promise<ImportResult> {
  const { repo } = input;
  const checked = repo.blocksChecked;
  try {
    const batch = await storeBatch(deps, [{ kind: 'snapshot', repo, pds: input.pds, handle: input.handle, signingKey: input.signingKey }], {
      filter: recordFilter(input.filter),
      ephemeralRetentionSeconds: input.ephemeralRetentionSeconds,
      origin: 'backfill',
      trace: input.trace,
      ...(checked ? { alsoInTransaction: () => checked } : {}),
    });
    return asImportResult(batch.outcomes[0]!, { packKey: batch.packKey, newBlocks: batch.newBlocks, packBytes: batch.packBytes }, input);
  } catch (err) {
    if (checked) await checked;
    throw err;
  }
}

/**
 * `importRepo` through a shared batcher (the bulk backfill's path): the repo lands in the next
 * batch with other repos, and its outcome is its own. The batcher's settings (filter, ephemeral
 * mode) apply; `newBlocks` and `packBytes` count the blocks the batch's pack holds for this repo.
 */
export async function importThrough(batcher: StoreBatcher, input: Omit<ImportInput, 'ephemeralRetentionSeconds' | 'trace'>): Promise<ImportResult> {
  // A batch commits many repos: this one's blocks are checked before it joins one.
  if (input.repo.blocksChecked) await input.repo.blocksChecked;
  const { outcome, packKey, newBlocks, packBytes } = await batcher.submit({ kind: 'snapshot', repo: input.repo, pds: input.pds, handle: input.handle, signingKey: input.signingKey });
  return asImportResult(outcome, { packKey, newBlocks, packBytes }, { repo: input.repo, filter: input.filter });
}

function asImportResult(o: ChangeOutcome, pack: { packKey: string | undefined; newBlocks: number; packBytes: number }, input: Pick<ImportInput, 'repo' | 'filter'>): ImportResult {
  const { repo } = input;
  switch (o.kind) {
    case 'imported':
      return { ...o, ...pack };
    case 'skipped':
      return o;
    case 'dropped':
      return { kind: 'dropped', did: o.did, rev: repo.rev, reason: `${o.reason} (${input.filter.signal.join(', ')})` };
    default:
      throw new Error(`a snapshot cannot end as ${o.kind}`);
  }
}

/**
 * Removes a repo's records, events and the references they held, and sets its status:
 * `deleted` (the PDS no longer has it) or `dropped` (filter mode: no signal collection).
 */
export async function dropRepo(pool: pg.Pool, did: string, status: 'deleted' | 'dropped', detail: { rev?: string; reason: string }): Promise<void> {
  await withTransaction(pool, async (tx) => {
    await tx.query(`INSERT INTO repos (did) VALUES ($1) ON CONFLICT (did) DO NOTHING`, [did]);
    await tx.query('SELECT did FROM repos WHERE did = $1 FOR UPDATE', [did]);
    const deltas = new RefDeltas();
    await wipeRepoRows(tx, did, deltas);
    await deltas.apply(tx);
    await tx.query(
      `INSERT INTO events (did, kind, rev, origin, detail) VALUES ($1, 'account', $2, 'backfill', $3)`,
      [did, detail.rev ?? null, JSON.stringify({ status, reason: detail.reason })],
    );
    await tx.query(
      `UPDATE repos SET status = $2, gone_status = NULL, rev = NULL, head_cid = NULL, data_cid = NULL,
         resync_kind = NULL, resync_count = 0, next_retry_at = NULL, last_error = $3,
         records_count = 0, blocks_count = 0, updated_at = now()
       WHERE did = $1`,
      [did, status, detail.reason],
    );
  }, EVENT_WRITER);
}
