/**
 * Which repos are due for another attempt, in pages: the resync sweep's repos (a failed import
 * waiting in resync: status `error`, or `active` with an older good copy, with a resync kind)
 * and the gone re-check's (status `gone`), each once its `next_retry_at` has passed.
 *
 * Pages run in DID order with the last DID as the cursor, against one fixed `asOf` for the
 * whole sweep, so a sweep visits each due repo once even while attempts move retry times.
 */
import type { Queryable } from '../storage/db/pool.ts';

export type SweepKind = 'resync' | 'gone';

export interface DueQuery {
  kind: SweepKind;
  /** Repos whose retry time is at or before this are due. */
  asOf: Date;
  /** Start after this DID (the previous page's cursor). */
  after?: string | undefined;
  limit: number;
}

export interface DueRepo {
  did: string;
  status: string;
  /** Attempts so far, so a restarted backoff continues where it was. */
  resyncCount: number;
  nextRetryAt: string;
}

export interface DuePage {
  repos: DueRepo[];
  /** The last DID of the page, to pass as `after`; undefined when there are no more. */
  cursor: string | undefined;
}

const WHERE: Record<SweepKind, string> = {
  resync: `status IN ('error', 'active') AND resync_kind IS NOT NULL`,
  gone: `status = 'gone'`,
};

/** One page of the repos due for `kind`. */
export async function dueRepos(db: Queryable, q: DueQuery): Promise<DuePage> {
  if (!Number.isInteger(q.limit) || q.limit < 1) throw new RangeError(`page size ${q.limit} is not a whole number ≥ 1`);
  const { rows } = await db.query<{ did: string; status: string; resync_count: number; next_retry_at: Date }>(
    // next_retry_at IS NOT NULL lets the planner use the partial index repos_next_retry_at.
    `SELECT did, status, resync_count, next_retry_at FROM repos
     WHERE next_retry_at IS NOT NULL AND next_retry_at <= $1 AND did > $2 AND ${WHERE[q.kind]}
     ORDER BY did LIMIT $3`,
    // One row past the page tells whether there is another, saving a last empty page.
    [q.asOf, q.after ?? '', q.limit + 1],
  );
  const repos = rows.slice(0, q.limit).map((r) => ({ did: r.did, status: r.status, resyncCount: r.resync_count, nextRetryAt: r.next_retry_at.toISOString() }));
  return { repos, cursor: rows.length > q.limit ? repos[repos.length - 1]!.did : undefined };
}
