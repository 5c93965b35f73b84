/**
 * The mirror in numbers: repos by state, records, blocks, packs and bytes, blobs, events and the
 * open heal queue. Collected by the periodic `stats` job and kept in `job_state` ('stats'), so
 * that the metrics endpoint and `repowalk` commands read one row instead of counting tables of
 * billions of rows on every scrape.
 *
 * The counts are exact (`count(*)`) where that is cheap. `blocks` and `events` grow with every
 * record stored (billions of rows in a mirror of the network): counted whole every five minutes,
 * the job would read them whole every five minutes (at 100,000 repos of 10 records already
 * 0.2 s a run, a thousand times that at the network's size). Past `exactBelow` rows (by the
 * planner's estimate) they are counted from a sample of their pages (`TABLESAMPLE SYSTEM`) of
 * about `exactBelow` rows, scaled up, so a run's cost stops growing with them; `sampledPercent`
 * says so. The sample is of whole pages, so the figures move by a fraction of a percent from run
 * to run.
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
  /** `sampledPercent`: counted from that share of the table's pages, scaled up (absent: exact). */
  blocks: { count: number; bytes: number; sampledPercent?: number };
  packs: { count: number; bytes: number };
  blobs: { present: number; missing: number; bytes: number };
  events: { count: number; expiring: number; expired: number; sampledPercent?: number };
  healQueue: { open: number };
}

const n = (v: string | number | null | undefined) => Number(v ?? 0);

export interface StatsOptions {
  /** Count `blocks` and `events` whole below this many rows (planner's estimate); sample above. Default 2,000,000. */
  exactBelow?: number;
}

/**
 * How much of `table` to read: 100 (all of it, no sample) while the planner's estimate of its
 * rows is below `exactBelow` (or unknown: never analyzed), else the percent of its pages that
 * holds about `exactBelow` rows.
 */
async function samplePercent(db: Queryable, table: 'blocks' | 'events', exactBelow: number): Promise<number> {
  const { rows } = await db.query<{ n: string }>('SELECT reltuples AS n FROM pg_class WHERE oid = $1::regclass', [table]);
  const estimate = Number(rows[0]?.n ?? -1);
  if (!(estimate >= exactBelow)) return 100;
  return Math.max(0.01, Math.min(100, (100 * exactBelow) / estimate));
}

/** `FROM table`, or a sample of its pages; and the factor that scales the sample's sums up. */
function sampled(table: string, percent: number): { from: string; scale: number } {
  return percent >= 100 ? { from: table, scale: 1 } : { from: `${table} TABLESAMPLE SYSTEM (${percent})`, scale: 100 / percent };
}

export async function collectStats(db: Queryable, opts: StatsOptions = {}): Promise<MirrorStats> {
  const exactBelow = opts.exactBelow ?? 2_000_000;
  const at = (await db.query<{ now: Date }>('SELECT now() AS now')).rows[0]!.now;
  // One pass over `repos` for every repo figure, grouped by the three states (a few dozen groups
  // at most) and summed up here: four statements read the table four times.
  const repoGroups = await db.query<{ status: string; gone_status: string | null; resync_kind: string | null; n: string; due: string; records: string }>(
    `SELECT status, gone_status, resync_kind, count(*) AS n,
       count(*) FILTER (WHERE next_retry_at IS NOT NULL AND next_retry_at <= $1) AS due, coalesce(sum(records_count), 0) AS records
     FROM repos GROUP BY status, gone_status, resync_kind`,
    [at],
  );
  const byStatus: Record<string, number> = {};
  const byGone: Record<string, number> = {};
  const byResync: Record<string, number> = {};
  let due = 0;
  let records = 0;
  for (const g of repoGroups.rows) {
    const count = n(g.n);
    byStatus[g.status] = (byStatus[g.status] ?? 0) + count;
    if (g.status === 'gone' && g.gone_status !== null) byGone[g.gone_status] = (byGone[g.gone_status] ?? 0) + count;
    if (g.resync_kind !== null) byResync[g.resync_kind] = (byResync[g.resync_kind] ?? 0) + count;
    due += n(g.due);
    records += n(g.records);
  }
  const blocksPercent = await samplePercent(db, 'blocks', exactBelow);
  const blocksFrom = sampled('blocks', blocksPercent);
  const blocks = await db.query<{ count: string; bytes: string }>(`SELECT count(*) AS count, coalesce(sum(byte_length), 0) AS bytes FROM ${blocksFrom.from}`);
  const packs = await db.query<{ count: string; bytes: string }>('SELECT count(*) AS count, coalesce(sum(size_bytes), 0) AS bytes FROM packs');
  const blobs = await db.query<{ present: string; missing: string; bytes: string }>(
    `SELECT count(*) FILTER (WHERE status = 'present') AS present, count(*) FILTER (WHERE status = 'missing') AS missing,
       coalesce(sum(size) FILTER (WHERE status = 'present'), 0) AS bytes FROM blobs`,
  );
  const eventsPercent = await samplePercent(db, 'events', exactBelow);
  const eventsFrom = sampled('events', eventsPercent);
  const events = await db.query<{ count: string; expiring: string; expired: string }>(
    `SELECT count(*) AS count, count(expires_at) AS expiring, count(*) FILTER (WHERE expires_at <= $1) AS expired FROM ${eventsFrom.from}`,
    [at],
  );
  const scaled = (v: string | undefined, by: number) => Math.round(n(v) * by);
  const sampledAt = (percent: number) => (percent < 100 ? { sampledPercent: Math.round(percent * 1000) / 1000 } : {});
  const heal = await db.query<{ open: string }>('SELECT count(*) AS open FROM heal_queue WHERE healed_at IS NULL');
  return {
    at: at.toISOString(),
    repos: {
      total: Object.values(byStatus).reduce((a, b) => a + b, 0),
      byStatus,
      byGoneStatus: byGone,
      byResyncKind: byResync,
      due,
    },
    records,
    blocks: { count: scaled(blocks.rows[0]?.count, blocksFrom.scale), bytes: scaled(blocks.rows[0]?.bytes, blocksFrom.scale), ...sampledAt(blocksPercent) },
    packs: { count: n(packs.rows[0]?.count), bytes: n(packs.rows[0]?.bytes) },
    blobs: { present: n(blobs.rows[0]?.present), missing: n(blobs.rows[0]?.missing), bytes: n(blobs.rows[0]?.bytes) },
    events: {
      count: scaled(events.rows[0]?.count, eventsFrom.scale),
      expiring: scaled(events.rows[0]?.expiring, eventsFrom.scale),
      expired: scaled(events.rows[0]?.expired, eventsFrom.scale),
      ...sampledAt(eventsPercent),
    },
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
