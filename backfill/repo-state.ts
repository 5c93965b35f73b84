/**
 * Repo states other than a successful import: waiting in resync after a failure, and gone
 * (deactivated, taken down, suspended). Each keeps the reason on the repo row, so
 * `repowalk backfill status` and the sweep can tell why and when.
 */
import type pg from 'pg';
import { withTransaction } from '../storage/db/pool.ts';
import { EVENT_WRITER } from '../storage/event-horizon.ts';

export type ResyncKind = 'rate-limited' | 'transport' | 'error';
export type GoneStatus = 'deactivated' | 'takendown' | 'suspended';

/** Records a failed attempt: its kind, the retry count, when to try next, and the error text. */
export async function markResync(pool: pg.Pool, did: string, r: { kind: ResyncKind; count: number; nextRetryAt: Date; error: string; pds?: string | undefined }): Promise<void> {
  await pool.query(
    `INSERT INTO repos (did, status, resync_kind, resync_count, next_retry_at, last_error, pds)
     VALUES ($1, 'error', $2, $3, $4, $5, $6)
     ON CONFLICT (did) DO UPDATE SET
       -- A repo we hold a good copy of stays active while it waits; one we never got is in error.
       status = CASE WHEN repos.head_cid IS NOT NULL AND repos.status = 'active' THEN 'active' ELSE 'error' END,
       gone_status = NULL,
       resync_kind = $2, resync_count = $3, next_retry_at = $4, last_error = $5,
       pds = COALESCE($6, repos.pds), updated_at = now()`,
    [did, r.kind, r.count, r.nextRetryAt, r.error.slice(0, 2000), r.pds ?? null],
  );
}

/**
 * Marks a repo gone with its status, records an account event, and sets when the gone
 * re-check should try it again. Its stored records stay: an account can come back.
 */
export async function markGone(pool: pg.Pool, did: string, g: { status: GoneStatus; recheckAt: Date; detail: string }): Promise<void> {
  await withTransaction(pool, async (tx) => {
    const prev = await tx.query<{ status: string; gone_status: string | null }>(
      `INSERT INTO repos (did) VALUES ($1) ON CONFLICT (did) DO UPDATE SET did = EXCLUDED.did RETURNING status, gone_status`,
      [did],
    );
    const was = prev.rows[0];
    await tx.query(
      `UPDATE repos SET status = 'gone', gone_status = $2, resync_kind = NULL, resync_count = 0,
         next_retry_at = $3, last_error = $4, updated_at = now() WHERE did = $1`,
      [did, g.status, g.recheckAt, g.detail.slice(0, 2000)],
    );
    // One account event per change of status, not per re-check.
    if (!(was?.status === 'gone' && was.gone_status === g.status)) {
      await tx.query(`INSERT INTO events (did, kind, origin, detail) VALUES ($1, 'account', 'backfill', $2)`, [did, JSON.stringify({ status: g.status })]);
    }
  }, EVENT_WRITER);
}

export interface RepoRow {
  did: string;
  status: string;
  goneStatus: string | null;
  rev: string | null;
  pds: string | null;
  handle: string | null;
  resyncKind: string | null;
  resyncCount: number;
  nextRetryAt: Date | null;
  lastError: string | null;
  recordsCount: number;
  lastImportedAt: Date | null;
}

export async function getRepoRow(pool: pg.Pool, did: string): Promise<RepoRow | undefined> {
  const { rows } = await pool.query(
    `SELECT did, status, gone_status, rev, pds, handle, resync_kind, resync_count, next_retry_at, last_error, records_count, last_imported_at
     FROM repos WHERE did = $1`,
    [did],
  );
  const r = rows[0];
  return (
    r && {
      did: r.did, status: r.status, goneStatus: r.gone_status, rev: r.rev, pds: r.pds, handle: r.handle,
      resyncKind: r.resync_kind, resyncCount: r.resync_count, nextRetryAt: r.next_retry_at, lastError: r.last_error,
      recordsCount: Number(r.records_count), lastImportedAt: r.last_imported_at,
    }
  );
}
