/**
 * Garbage collection: blocks no longer reachable from any repo head or event are reclaimed.
 *
 * 1. **Mark** (`gc-mark.ts`): a walk from every repo marks the live blocks and blobs. Then the
 *    repos whose row changed since shortly before the mark began are walked again, so that an
 *    import that committed while the mark ran (and may reuse blocks the first walk did not see
 *    live) is covered.
 * 2. **Sweep**: a pack older than the grace period with no live block — none marked, none with a
 *    refcount above 0 — is removed: its block index rows, then its `packs` row, in one
 *    transaction that locks those rows in CID order and checks them again under the lock; then
 *    its blobstore object. Rows go first, so a crash leaves an object nobody references
 *    (an orphan, step 5), never an index row naming a missing pack.
 * 3. **Repack** (`gc-repack.ts`): a pack older than the grace period whose live share of bytes
 *    fell below a threshold has its live blocks copied into a new pack and their index rows
 *    re-pointed at it; the next run's sweep removes the old one.
 * 4. **Blobs**: blob rows older than the grace period that no live record references are
 *    removed, then their objects (only when the mark walked blobs, i.e. blobs are mirrored).
 * 5. **Orphans** (`gc-orphans.ts`): objects under `packs/` and `blobs/` that no row names are
 *    deleted once they have been orphans for longer than the grace period.
 *
 * An incomplete mark (a block that could not be read, see `gc-mark.ts`) skips steps 2–3 (and 4
 * when the blob mark is incomplete): the report says why, and names the problems.
 *
 * Concurrency with imports. The importer locks block rows in CID order when it changes their
 * refcounts, as the sweep does when it deletes them, so a record block or commit that an import
 * starts referencing is either seen with its new refcount (and kept) or gone before the import's
 * refcount update, which then fails and is retried (and stores the block again). MST nodes carry
 * no refcount: an import that found an old MST node indexed just before the sweep removed it,
 * and commits after the re-mark, can reference a removed node. Closing that takes the importer's
 * part: holding `GC_LOCK_KEY` shared in its transaction and checking there that the blocks it
 * reuses are still indexed (retrying when one is not). The sweep already holds it exclusively.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { LIVE_BLOCK, type MarkResult, MarkSet, addMark, markLive } from './gc-mark.ts';
import { inGcTransaction } from './gc-lock.ts';
import { repackPacks } from './gc-repack.ts';
import { sweepOrphans } from './gc-orphans.ts';
import { readJobState, writeJobState } from './job-state.ts';

export { GC_LOCK_KEY } from './gc-lock.ts';

/** Held for a whole GC run: one run at a time. */
const GC_RUN_LOCK_KEY = createHash('sha256').update('repowalk:gc:run').digest().readBigInt64BE(0);

export interface GcOptions {
  /** Packs, blobs and orphans younger than this are kept. */
  graceSeconds: number;
  /** Repack packs whose live share of bytes is below this (0 to 1); 0 turns repacking off. */
  repackBelow: number;
  /** New packs made by repacking are closed at about this size. Default 32 MiB. */
  repackTargetBytes?: number | undefined;
  /** Report what would be done, change nothing. */
  dryRun?: boolean | undefined;
  /** Delete objects no row names (step 5). Default true. */
  orphans?: boolean | undefined;
  /** Re-mark repos whose row changed since this long before the mark began. Default 900. */
  remarkMarginSeconds?: number | undefined;
  signal?: AbortSignal | undefined;
  /** Called after each page or batch with the report so far. */
  onProgress?: ((report: GcReport) => void | Promise<void>) | undefined;
  /** Called every few seconds while the mark walks (an activity heartbeats here). */
  tick?: (() => void) | undefined;
}

export type GcPhase = 'mark' | 'remark' | 'sweep' | 'repack' | 'blobs' | 'orphans' | 'done';

export interface GcReport {
  startedAt: string;
  /** Only what is older than this is deleted. */
  cutoff: string;
  finishedAt?: string;
  dryRun: boolean;
  phase: GcPhase;
  mark: MarkResult & { blobsWalked: boolean; remarkedRepos: number; complete: boolean; blobsComplete: boolean };
  sweep: { packs: number; bytes: number; blockRows: number };
  /** Blocks with a refcount above 0 that the mark did not reach (the refcount wins; the validate walk says which side is wrong). */
  refcountWithoutMark: number;
  repack: { packs: number; newPacks: number; blocksMoved: number; bytesBefore: number; bytesAfter: number; skipped: string[] };
  blobs: { rows: number; objects: number; bytes: number };
  orphans: { seen: number; deleted: number };
  /** Steps not taken, and why. */
  skipped: string[];
}

export class GcBusyError extends Error {
  override name = 'GcBusyError';
}

/** Runs GC; see the module comment. @throws {GcBusyError} when another run holds the run lock. */
export async function collectGarbage(stores: { pool: pg.Pool; blobs: BlobStore }, opts: GcOptions): Promise<GcReport> {
  if (!(opts.graceSeconds >= 0)) throw new RangeError(`grace period ${opts.graceSeconds} is not ≥ 0`);
  if (!(opts.repackBelow >= 0 && opts.repackBelow <= 1)) throw new RangeError(`repack threshold ${opts.repackBelow} is not between 0 and 1`);
  const client = await stores.pool.connect();
  let broken: Error | undefined;
  try {
    const locked = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [GC_RUN_LOCK_KEY]);
    if (!locked.rows[0]!.ok) throw new GcBusyError('another GC run is in progress');
    try {
      const report = await run(client, stores, opts);
      await client.query('DROP TABLE IF EXISTS pg_temp.gc_live_blocks, pg_temp.gc_live_blobs');
      await client.query('SELECT pg_advisory_unlock($1)', [GC_RUN_LOCK_KEY]);
      return report;
    } catch (err) {
      // The connection is dropped rather than returned: it may be mid-transaction, and closing
      // it releases the run lock and the mark tables with it.
      broken = err instanceof Error ? err : new Error(String(err));
      throw err;
    }
  } finally {
    client.release(broken);
  }
}

async function run(client: pg.PoolClient, stores: { pool: pg.Pool; blobs: BlobStore }, opts: GcOptions): Promise<GcReport> {
  const started = (await client.query<{ now: Date }>('SELECT now() AS now')).rows[0]!.now;
  const cutoff = new Date(started.getTime() - opts.graceSeconds * 1000);
  const dryRun = opts.dryRun ?? false;
  const blobsMirrored = (await client.query<{ any: boolean }>('SELECT EXISTS (SELECT 1 FROM blobs) AS any')).rows[0]!.any;
  const report: GcReport = {
    startedAt: started.toISOString(),
    cutoff: cutoff.toISOString(),
    dryRun,
    phase: 'mark',
    mark: { repos: 0, blockNodes: 0, blobNodes: 0, unindexedRecords: 0, problems: [], problemCount: 0, blobProblemCount: 0, blobsWalked: blobsMirrored, remarkedRepos: 0, complete: false, blobsComplete: false },
    sweep: { packs: 0, bytes: 0, blockRows: 0 },
    refcountWithoutMark: 0,
    repack: { packs: 0, newPacks: 0, blocksMoved: 0, bytesBefore: 0, bytesAfter: 0, skipped: [] },
    blobs: { rows: 0, objects: 0, bytes: 0 },
    orphans: { seen: 0, deleted: 0 },
    skipped: [],
  };
  const progress = async () => {
    if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('GC aborted');
    await opts.onProgress?.(structuredClone(report));
  };

  const marks = await MarkSet.open(client);
  const walkStores = { pool: stores.pool, store: stores.blobs };
  const first = await markLive(walkStores, marks, {
    blobs: blobsMirrored,
    signal: opts.signal,
    tick: opts.tick,
    onPage: async (m) => {
      Object.assign(report.mark, m);
      await progress();
    },
  });
  Object.assign(report.mark, first);
  report.phase = 'remark';
  await progress();
  const again = await markLive(walkStores, marks, {
    blobs: blobsMirrored,
    changedSince: new Date(started.getTime() - (opts.remarkMarginSeconds ?? 900) * 1000),
    signal: opts.signal,
    tick: opts.tick,
  });
  addMark(report.mark, { ...again, repos: 0 });
  report.mark.remarkedRepos = again.repos;
  await marks.seal();
  report.mark.complete = report.mark.problemCount === 0;
  report.mark.blobsComplete = report.mark.complete && report.mark.blobProblemCount === 0;

  const { rows: disagree } = await client.query<{ n: string }>(
    'SELECT count(*) AS n FROM blocks b WHERE b.refcount > 0 AND NOT EXISTS (SELECT 1 FROM gc_live_blocks m WHERE m.cid = b.cid)',
  );
  report.refcountWithoutMark = Number(disagree[0]!.n);

  if (report.mark.complete) {
    report.phase = 'sweep';
    await progress();
    await sweepPacks(client, stores.blobs, report, cutoff, dryRun, progress);
    report.phase = 'repack';
    await progress();
    if (opts.repackBelow > 0) {
      const repack = { below: opts.repackBelow, targetBytes: opts.repackTargetBytes ?? 32 * 1024 * 1024, dryRun };
      await repackPacks(client, stores.blobs, report.repack, cutoff, repack, progress);
    } else {
      report.skipped.push('repack: off (repackBelow = 0)');
    }
  } else {
    report.skipped.push(`sweep and repack: the mark is incomplete (${report.mark.problemCount} problems; first: ${describeProblem(report.mark.problems[0])})`);
  }

  report.phase = 'blobs';
  await progress();
  if (!blobsMirrored) report.skipped.push('blobs: none mirrored');
  else if (!report.mark.blobsComplete) report.skipped.push(`blobs: the blob mark is incomplete (${report.mark.problemCount} problems, ${report.mark.blobProblemCount} records unreadable for blob refs)`);
  else await sweepBlobs(client, stores.blobs, report, cutoff, dryRun, progress);

  report.phase = 'orphans';
  await progress();
  if (opts.orphans ?? true) await sweepOrphans(client, stores.blobs, report.orphans, started, cutoff, dryRun, progress);
  else report.skipped.push('orphans: off');

  report.phase = 'done';
  report.finishedAt = new Date().toISOString();
  if (!dryRun) await writeJobState(client, LAST_REPORT_KEY, report);
  return report;
}

function describeProblem(p: MarkResult['problems'][number] | undefined): string {
  return p ? `${p.nodeType} ${p.key}: ${p.detail}` : 'none';
}

const BATCH = 200;

async function sweepPacks(client: pg.ClientBase, store: BlobStore, report: GcReport, cutoff: Date, dryRun: boolean, progress: () => Promise<void>): Promise<void> {
  let after = 0;
  for (;;) {
    const { rows } = await client.query<{ id: string; key: string; size_bytes: string }>(
      `SELECT p.id, p.key, p.size_bytes FROM packs p
       WHERE p.id > $1 AND p.created_at < $2 AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.pack_id = p.id AND ${LIVE_BLOCK})
       ORDER BY p.id LIMIT ${BATCH}`,
      [after, cutoff],
    );
    if (rows.length === 0) return;
    after = Number(rows[rows.length - 1]!.id);
    if (dryRun) {
      report.sweep.packs += rows.length;
      report.sweep.bytes += rows.reduce((n, r) => n + Number(r.size_bytes), 0);
      continue;
    }
    const ids = rows.map((r) => r.id);
    const gone = await inGcTransaction(client, async () => {
      // The importers' lock order; then the same question again, now that nobody can change the answer.
      await client.query(`SELECT count(*) FROM (SELECT 1 FROM blocks WHERE pack_id = ANY($1::bigint[]) ORDER BY cid FOR UPDATE) l`, [ids]);
      const alive = await client.query<{ pack_id: string }>(`SELECT DISTINCT b.pack_id FROM blocks b WHERE b.pack_id = ANY($1::bigint[]) AND ${LIVE_BLOCK}`, [ids]);
      const keep = new Set(alive.rows.map((r) => r.pack_id));
      const dead = ids.filter((id) => !keep.has(id));
      const blockRows = await client.query('DELETE FROM blocks WHERE pack_id = ANY($1::bigint[])', [dead]);
      const packs = await client.query<{ key: string; size_bytes: string }>('DELETE FROM packs WHERE id = ANY($1::bigint[]) RETURNING key, size_bytes', [dead]);
      return { blockRows: blockRows.rowCount ?? 0, packs: packs.rows };
    });
    report.sweep.blockRows += gone.blockRows;
    for (const p of gone.packs) {
      await store.delete(p.key);
      report.sweep.packs++;
      report.sweep.bytes += Number(p.size_bytes);
    }
    await progress();
  }
}

async function sweepBlobs(client: pg.ClientBase, store: BlobStore, report: GcReport, cutoff: Date, dryRun: boolean, progress: () => Promise<void>): Promise<void> {
  let after = '';
  for (;;) {
    const { rows } = await client.query<{ cid: string; key: string | null; size: string | null }>(
      `SELECT b.cid, b.key, b.size FROM blobs b
       WHERE b.cid > $1 AND b.created_at < $2 AND b.updated_at < $2 AND NOT EXISTS (SELECT 1 FROM gc_live_blobs m WHERE m.cid = b.cid)
       ORDER BY b.cid LIMIT ${BATCH}`,
      [after, cutoff],
    );
    if (rows.length === 0) return;
    after = rows[rows.length - 1]!.cid;
    if (dryRun) {
      report.blobs.rows += rows.length;
      report.blobs.objects += rows.filter((r) => r.key !== null).length;
      report.blobs.bytes += rows.reduce((n, r) => n + Number(r.size ?? 0), 0);
      continue;
    }
    const gone = await inGcTransaction(client, async () => {
      const res = await client.query<{ key: string | null; size: string | null }>(
        'DELETE FROM blobs WHERE cid = ANY($1::text[]) AND updated_at < $2 RETURNING key, size',
        [rows.map((r) => r.cid), cutoff],
      );
      return res.rows;
    });
    report.blobs.rows += gone.length;
    for (const b of gone) {
      if (b.key === null) continue;
      await store.delete(b.key);
      report.blobs.objects++;
      report.blobs.bytes += Number(b.size ?? 0);
    }
    await progress();
  }
}

const LAST_REPORT_KEY = 'gc:last';

/** The report of the last GC run (not a dry run), or undefined before the first. */
export async function lastGcReport(db: pg.Pool | pg.ClientBase): Promise<GcReport | undefined> {
  return readJobState<GcReport>(db, LAST_REPORT_KEY);
}
