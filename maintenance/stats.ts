/**
 * The mirror in numbers: repos by state, records, blocks, packs and bytes, blobs, events and the
 * open heal queue. Collected by the periodic `stats` job and kept in `job_state` ('stats'), so
 * that the metrics endpoint and `repowalk` commands read one row instead of counting tables of
 * billions of rows on every scrape.
 *
 * The counts are exact (`count(*)`): right for the mirrors this runs on today; a full-network
 * mirror would switch the largest ones (blocks, events) to the planner's estimates.
 */
import type { Queryable } from '../storage/db/pool.ts';
import { readJobState, writeJobState } from './job-state.ts';

export interface MirrorStats {
  /** When the counts were taken, ISO. */
  at: string;
  repos: {
    total: number;
    byStatus: Record<string, number>;
    byGoneStatus: Record<string, number>;
    byResyncKind: Record<string, number>;
    /** Repos whose retry (or gone re-check) time has passed. */
    due: number;
  };
  records: number;
  blocks: { count: number; bytes: number };
  packs: { count: number; bytes: number };
  blobs: { present: number; missing: number; bytes: number };
  events: { count: number; expiring: number; expired: number };
  healQueue: { open: number };
}

const n = (v: string | number | null | undefined) => Number(v ?? 0);

function grouped(rows: { k: string | null; n: string }[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of rows) if (r.k !== null) out[r.k] = n(r.n);
  return out;
}

export async function collectStats(db: Queryable): Promise<MirrorStats> {
  const at = (await db.query<{ now: Date }>('SELECT now() AS now')).rows[0]!.now;
  const byStatus = await db.query<{ k: string; n: string }>('SELECT status AS k, count(*) AS n FROM repos GROUP BY status');
  const byGone = await db.query<{ k: string | null; n: string }>(`SELECT gone_status AS k, count(*) AS n FROM repos WHERE status = 'gone' GROUP BY gone_status`);
  const byResync = await db.query<{ k: string | null; n: string }>('SELECT resync_kind AS k, count(*) AS n FROM repos WHERE resync_kind IS NOT NULL GROUP BY resync_kind');
  const repoTotals = await db.query<{ due: string; records: string }>(
    `SELECT count(*) FILTER (WHERE next_retry_at IS NOT NULL AND next_retry_at <= $1) AS due, coalesce(sum(records_count), 0) AS records FROM repos`,
    [at],
  );
  const blocks = await db.query<{ count: string; bytes: string }>('SELECT count(*) AS count, coalesce(sum(byte_length), 0) AS bytes FROM blocks');
  const packs = await db.query<{ count: string; bytes: string }>('SELECT count(*) AS count, coalesce(sum(size_bytes), 0) AS bytes FROM packs');
  const blobs = await db.query<{ present: string; missing: string; bytes: string }>(
    `SELECT count(*) FILTER (WHERE status = 'present') AS present, count(*) FILTER (WHERE status = 'missing') AS missing,
       coalesce(sum(size) FILTER (WHERE status = 'present'), 0) AS bytes FROM blobs`,
  );
  const events = await db.query<{ count: string; expiring: string; expired: string }>(
    `SELECT count(*) AS count, count(expires_at) AS expiring, count(*) FILTER (WHERE expires_at <= $1) AS expired FROM events`,
    [at],
  );
  const heal = await db.query<{ open: string }>('SELECT count(*) AS open FROM heal_queue WHERE healed_at IS NULL');
  const status = grouped(byStatus.rows);
  return {
    at: at.toISOString(),
    repos: {
      total: Object.values(status).reduce((a, b) => a + b, 0),
      byStatus: status,
      byGoneStatus: grouped(byGone.rows),
      byResyncKind: grouped(byResync.rows),
      due: n(repoTotals.rows[0]?.due),
    },
    records: n(repoTotals.rows[0]?.records),
    blocks: { count: n(blocks.rows[0]?.count), bytes: n(blocks.rows[0]?.bytes) },
    packs: { count: n(packs.rows[0]?.count), bytes: n(packs.rows[0]?.bytes) },
    blobs: { present: n(blobs.rows[0]?.present), missing: n(blobs.rows[0]?.missing), bytes: n(blobs.rows[0]?.bytes) },
    events: { count: n(events.rows[0]?.count), expiring: n(events.rows[0]?.expiring), expired: n(events.rows[0]?.expired) },
    healQueue: { open: n(heal.rows[0]?.open) },
  };
}

export const STATS_KEY = 'stats';

export async function storeStats(db: Queryable, stats: MirrorStats): Promise<void> {
  await writeJobState(db, STATS_KEY, stats);
}

/** The counts the last `stats` run stored, or undefined before the first. */
export async function readStats(db: Queryable): Promise<MirrorStats | undefined> {
  return readJobState<MirrorStats>(db, STATS_KEY);
}
