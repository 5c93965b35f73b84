/**
 * The SQL the validate walk's checks ask: each a question about stored rows, answered for many
 * keys at once (the checks batch their questions), returning only what the check reports on.
 * Kept here, beside the schema's other users, so that a check reads as what it judges and a
 * change of schema finds every query that reads it.
 */
import type { Queryable } from './db/pool.ts';

/** A block whose stored refcount differs from the references that exist to it. */
export interface RefcountMismatch {
  refcount: number;
  refs: number;
}

/** The DIDs among `dids` of repos we mirror (active, or gone but kept). */
export async function mirroredDids(db: Queryable, dids: readonly string[]): Promise<Set<string>> {
  const { rows } = await db.query<{ did: string }>(`SELECT did FROM repos WHERE did = ANY($1::text[]) AND status IN ('active', 'gone')`, [dids]);
  return new Set(rows.map((r) => r.did));
}

/** The CIDs among `cids` the block index holds, as their bytes. */
export async function indexedBlocks(db: Queryable, cids: readonly Uint8Array[]): Promise<Buffer[]> {
  const { rows } = await db.query<{ cid: Buffer }>('SELECT cid FROM blocks WHERE cid = ANY($1::bytea[])', [cids]);
  return rows.map((r) => r.cid);
}

/** The signing key stored for `did`, or null (no row, or no key). */
export async function storedSigningKey(db: Queryable, did: string): Promise<string | null> {
  const { rows } = await db.query<{ signing_key: string | null }>('SELECT signing_key FROM repos WHERE did = $1', [did]);
  return rows[0]?.signing_key ?? null;
}

/**
 * The blocks among `cids` (by index) whose stored refcount differs from the references that
 * exist to them — `records` rows, repo heads, events — counted in one statement, so in one
 * snapshot: an import committing meanwhile cannot make them disagree. Blocks not indexed are
 * not reported here (whoever references them is).
 *
 * Each block is looked up in the hash indexes on `records.cid` and `events.cid` (migration
 * 0005), so a call costs what its blocks do, not what the mirror holds.
 */
export async function refcountMismatches(db: Queryable, cids: readonly Uint8Array[]): Promise<({ index: number } & RefcountMismatch)[]> {
  const out: ({ index: number } & RefcountMismatch)[] = [];
  // Block CIDs are 36 bytes; anything else cannot be indexed and is someone else's finding.
  const keep = cids.flatMap((c, i) => (c.length === 36 ? [i] : []));
  for (let from = 0; from < keep.length; from += REFCOUNT_BATCH) {
    const batch = keep.slice(from, from + REFCOUNT_BATCH);
    // One bytea of concatenated CIDs, split in SQL: a bytea[] parameter costs a hex string
    // per element to build and to parse.
    const { rows } = await db.query<{ i: string; refcount: string; refs: string }>(
      `WITH c AS MATERIALIZED (SELECT substring($1::bytea FROM (i - 1) * 36 + 1 FOR 36) AS cid, i FROM generate_series(1, $2::int) AS i),
            r AS (SELECT c.cid, count(*) AS n FROM c JOIN records x ON x.cid = c.cid GROUP BY c.cid),
            h AS (SELECT c.cid, count(*) AS n FROM c JOIN repos x ON x.head_cid = c.cid GROUP BY c.cid),
            e AS (SELECT c.cid, count(*) AS n FROM c JOIN events x ON x.cid = c.cid GROUP BY c.cid)
       SELECT c.i, b.refcount, coalesce(r.n, 0) + coalesce(h.n, 0) + coalesce(e.n, 0) AS refs
       FROM c JOIN blocks b ON b.cid = c.cid
       LEFT JOIN r ON r.cid = c.cid LEFT JOIN h ON h.cid = c.cid LEFT JOIN e ON e.cid = c.cid
       WHERE b.refcount <> coalesce(r.n, 0) + coalesce(h.n, 0) + coalesce(e.n, 0)`,
      [Buffer.concat(batch.map((i) => cids[i]!)), batch.length],
    );
    for (const r of rows) {
      const index = batch[Number(r.i) - 1]!;
      out.push({ index, refcount: Number(r.refcount), refs: Number(r.refs) });
    }
  }
  return out;
}

const REFCOUNT_BATCH = 50_000;

/**
 * Blocks of the given packs, and the blocks `cids`, whose stored refcount differs from the
 * references that exist to them: `records` rows, repo heads, events (the importer's definition). Computed in Postgres,
 * so nothing but the disagreements crosses the wire; usually none.
 *
 * The references of the three tables are gathered into one list and counted in one
 * aggregation, then joined once with the blocks: three aggregations and three joins cost a
 * third more (13 repos of 5,000 records: 260–310 ms of PostgreSQL CPU against 420–450).
 */
export async function refcountMismatchesInPacks(db: Queryable, packs: readonly number[], cids: readonly Uint8Array[] = []): Promise<({ cid: Buffer } & RefcountMismatch)[]> {
  // `cids` as one bytea of concatenated 36-byte CIDs, split in SQL (see `refcountMismatches`).
  const blocks = cids.filter((c) => c.length === 36);
  const { rows } = await db.query<{ cid: Buffer; refcount: string; refs: string }>(
    `WITH blk AS MATERIALIZED (
            SELECT cid, refcount FROM blocks WHERE pack_id = ANY($1::bigint[])
            UNION
            SELECT b.cid, b.refcount FROM generate_series(1, $3::int) AS i JOIN blocks b ON b.cid = substring($2::bytea FROM (i - 1) * 36 + 1 FOR 36)),
          refs AS (SELECT u.cid, count(*) AS n FROM (
              SELECT x.cid FROM records x JOIN blk ON blk.cid = x.cid
              UNION ALL SELECT x.cid FROM events x JOIN blk ON blk.cid = x.cid
              UNION ALL SELECT x.head_cid FROM repos x JOIN blk ON blk.cid = x.head_cid) u GROUP BY u.cid)
     SELECT blk.cid, blk.refcount, coalesce(refs.n, 0) AS refs
     FROM blk LEFT JOIN refs ON refs.cid = blk.cid
     WHERE blk.refcount <> coalesce(refs.n, 0)`,
    [packs, Buffer.concat(blocks), blocks.length],
  );
  return rows.map((x) => ({ cid: x.cid, refcount: Number(x.refcount), refs: Number(x.refs) }));
}
