/**
 * Retention: in ephemeral mode the importer keeps events, not records, and gives each event an
 * `expires_at`; this trims the events past it. An event holds a reference to the record block
 * its `cid` names (see `backfill/import.ts`), so each batch deletes its events and lowers those
 * blocks' refcounts in one transaction, in CID order like every refcount change (`RefDeltas`),
 * so it cannot deadlock with an import. A block whose refcount reaches 0 is not deleted here:
 * it may still be reachable from a repo head, and only GC's mark can tell.
 */
import type pg from 'pg';
import { withTransaction } from '../storage/db/pool.ts';
import { RefDeltas } from '../storage/refcounts.ts';

export interface RetentionOptions {
  /** Events whose `expires_at` is at or before this are trimmed. Default: the database's now. */
  asOf?: Date | undefined;
  /** Events per transaction. Default 5000. */
  batchSize?: number | undefined;
  /** Stop after this many batches (the rest waits for the next run). Default: no limit. */
  maxBatches?: number | undefined;
  /** Called after each committed batch (an activity heartbeats here). */
  onBatch?: ((progress: RetentionResult) => void | Promise<void>) | undefined;
  signal?: AbortSignal | undefined;
}

export interface RetentionResult {
  /** Events deleted. */
  trimmed: number;
  /** References to blocks dropped (events that named a record block). */
  refsDropped: number;
  batches: number;
  /** False when `maxBatches` or the signal stopped it with expired events left. */
  done: boolean;
  /** The cut-off used, ISO. */
  asOf: string;
}

/** Trims every event expired as of `asOf`, in batches. */
export async function trimExpiredEvents(pool: pg.Pool, opts: RetentionOptions = {}): Promise<RetentionResult> {
  const batchSize = opts.batchSize ?? 5000;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`batch size ${batchSize} is not a whole number ≥ 1`);
  // One cut-off for the whole run: events expiring while it runs wait for the next run.
  const asOf = opts.asOf ?? (await pool.query<{ now: Date }>('SELECT now() AS now')).rows[0]!.now;
  const result: RetentionResult = { trimmed: 0, refsDropped: 0, batches: 0, done: false, asOf: asOf.toISOString() };
  for (;;) {
    if (opts.signal?.aborted || (opts.maxBatches !== undefined && result.batches >= opts.maxBatches)) return result;
    const { deleted, refs } = await withTransaction(pool, async (tx) => {
      // SKIP LOCKED: two runs at once (a manual trigger beside the schedule) share the work
      // instead of waiting on each other's rows.
      const { rows } = await tx.query<{ cid: Buffer | null }>(
        `DELETE FROM events e USING (
           SELECT id FROM events WHERE expires_at <= $1 ORDER BY expires_at, id LIMIT $2 FOR UPDATE SKIP LOCKED
         ) doomed
         WHERE e.id = doomed.id
         RETURNING e.cid`,
        [asOf, batchSize],
      );
      const deltas = new RefDeltas();
      let refs = 0;
      for (const r of rows) {
        if (r.cid) {
          deltas.add(r.cid, -1);
          refs++;
        }
      }
      await deltas.apply(tx);
      return { deleted: rows.length, refs };
    });
    result.batches++;
    result.trimmed += deleted;
    result.refsDropped += refs;
    if (deleted < batchSize) result.done = true;
    await opts.onBatch?.({ ...result });
    if (result.done) return result;
  }
}

/** Events expired as of `asOf` and not trimmed yet (for stats and tests). */
export async function countExpiredEvents(db: pg.Pool | pg.ClientBase, asOf?: Date): Promise<number> {
  const { rows } = await db.query<{ n: string }>('SELECT count(*) AS n FROM events WHERE expires_at <= coalesce($1, now())', [asOf ?? null]);
  return Number(rows[0]!.n);
}
