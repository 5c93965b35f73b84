/**
 * Which repos a walk covers, in pages: repos split into slices by a hash of their DID, each
 * slice paged in DID order with the last DID as cursor. The slice function is defined once, in
 * SQL, and mirrored in `sliceOf` for callers outside Postgres; both take the first 32 bits of
 * SHA-256 of the DID's UTF-8 bytes modulo the slice count.
 */
import { createHash } from 'node:crypto';
import type { Queryable } from '../storage/db/pool.ts';

export function sliceOf(did: string, slices: number): number {
  return createHash('sha256').update(did, 'utf8').digest().readUInt32BE(0) % slices;
}

const SLICE_SQL = `(('x' || left(encode(sha256(convert_to(did, 'UTF8')), 'hex'), 8))::bit(32)::bigint % $2)`;

export interface RepoPageQuery {
  slice: number;
  slices: number;
  /** Start after this DID (the previous page's cursor). */
  after?: string | undefined;
  limit: number;
  /** Only repos whose row changed at or after this time (tail passes). */
  changedSince?: Date | undefined;
}

export interface RepoPage {
  dids: string[];
  /** The last DID of the page, to pass as `after`; undefined when the slice is done. */
  cursor: string | undefined;
}

/** One page of a slice's repos, in DID order. */
export async function repoPage(db: Queryable, q: RepoPageQuery): Promise<RepoPage> {
  const { rows } = await db.query<{ did: string }>(
    `SELECT did FROM repos
     WHERE did > $1 AND ${SLICE_SQL} = $3 AND ($5::timestamptz IS NULL OR updated_at >= $5)
     ORDER BY did LIMIT $4`,
    // One row past the page tells whether there is another page, saving a last empty one.
    [q.after ?? '', q.slices, q.slice, q.limit + 1, q.changedSince ?? null],
  );
  const dids = rows.slice(0, q.limit).map((r) => r.did);
  return { dids, cursor: rows.length > q.limit ? dids[dids.length - 1] : undefined };
}

/** Repos in a slice (for progress: how many pages to expect). */
export async function countRepos(db: Queryable, q: Omit<RepoPageQuery, 'after' | 'limit'>): Promise<number> {
  const { rows } = await db.query<{ n: string }>(
    `SELECT count(*) AS n FROM repos WHERE ${SLICE_SQL.replace('$2', '$1')} = $2 AND ($3::timestamptz IS NULL OR updated_at >= $3)`,
    [q.slices, q.slice, q.changedSince ?? null],
  );
  return Number(rows[0]?.n ?? 0);
}
