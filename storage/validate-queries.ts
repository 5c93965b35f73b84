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
 * Each block's `records` and `events` rows are counted by a lookup in the hash indexes on their
 * `cid` (migration 0005), written as correlated counts so that PostgreSQL cannot plan joins that
 * read those tables whole (see `refcountMismatchesInPacks`). Heads are counted mirror-wide, as
 * nothing here says which repos could name these blocks: `repos.head_cid` has no index, so that
 * is one pass over `repos` a call (the walk asks this only of blocks outside the packs its Repo
 * reads compared: none on the growth bench's mirrors of small repos, which store each repo's
 * blocks in the pack of its head).
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
            counted AS MATERIALIZED (
              SELECT c.i, c.cid, b.refcount, (SELECT count(*) FROM records x WHERE x.cid = c.cid) + (SELECT count(*) FROM events x WHERE x.cid = c.cid) AS n
              FROM c JOIN blocks b ON b.cid = c.cid),
            h AS (SELECT x.head_cid AS cid, count(*) AS n FROM repos x WHERE x.head_cid IN (SELECT cid FROM c) GROUP BY x.head_cid)
       SELECT k.i, k.refcount, k.n + coalesce(h.n, 0) AS refs
       FROM counted k LEFT JOIN h ON h.cid = k.cid
       WHERE k.refcount <> k.n + coalesce(h.n, 0)`,
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
 * How `refcountMismatchesInPacks` counts references: `lookup`, a lookup a block in the hash
 * indexes on `records.cid` and `events.cid`; `join`, `records` and `events` read whole and joined
 * with the blocks; `aggregate`, `records` and `events` read whole and counted by CID, then joined.
 * Same answer; the cost differs with the blocks' share of the mirror (see there).
 */
export type RefcountPlan = 'lookup' | 'join' | 'aggregate';

/**
 * Blocks of the given packs, and the blocks `cids`, whose stored refcount differs from the
 * references that exist to them: `records` rows, repo heads, events (the importer's definition),
 * with the heads counted among the repos `headsOf` (see below). Computed in Postgres, so nothing
 * but the disagreements crosses the wire; usually none.
 *
 * Its cost is its blocks', not the mirror's (issue 13). Each block's `records` and `events` rows
 * are counted by a lookup in the hash indexes on their `cid` (migration 0005), written as
 * correlated counts, which PostgreSQL cannot turn into joins: as joins, for a batch of ~15,000
 * blocks it planned hash joins that read `records` and `events` whole (at 100,000 repos of 10
 * records, 1.3 s a batch, so the walk cost the mirror squared over the batch). `repos.head_cid`
 * has no index, and one would stop live sync's HOT updates of `repos` (migration 0008), so heads
 * are not counted mirror-wide: only the heads of the repos `headsOf` (the repos read with these
 * packs, in the same snapshot) count, found by their primary key. For the blocks the walk of those
 * repos reaches, that is every head there is, as long as each head names its own repo's commit
 * (a commit is signed over its repo's DID, and only a repo's head steps to a commit). Another
 * repo's head among these blocks (its commit, in a pack the batch's repos share with it) comes
 * back as a disagreement, refcount 1 and no references: the walk does not reach that block from
 * `headsOf`, so nothing reports it; that repo's own read counts it. A block that is both another
 * repo's head and reached from `headsOf` (a record, an MST node or an event's block of theirs)
 * comes back with that head left out, so with fewer references than its refcount: the refcount
 * check counts such a block again mirror-wide before it reports it.
 *
 * `plan` (default `lookup`): when the blocks are a large share of the mirror (the caller's batch
 * is an eighth of its records or more), `records` and `events` are read whole, once each, which
 * then costs less than a lookup a block: `join` joins them with the blocks and counts the rows
 * that matched; `aggregate` counts every row by CID first and joins the counts with the blocks,
 * which skips two hash tables of the blocks and costs less once the blocks are a quarter of the
 * mirror or more (PostgreSQL CPU, whole mirror of 13 repos × 5,000 records: 250 ms join, 130-160
 * aggregate; half of 2,000 × 10: 47-51 against 31; an eighth: 19-27 against 25-26).
 */
export async function refcountMismatchesInPacks(
  db: Queryable,
  packs: readonly number[],
  cids: readonly Uint8Array[],
  headsOf: readonly string[],
  opts: { plan?: RefcountPlan } = {},
): Promise<({ cid: Buffer } & RefcountMismatch)[]> {
  // `cids` as one bytea of concatenated 36-byte CIDs, split in SQL (see `refcountMismatches`).
  const blocks = cids.filter((c) => c.length === 36);
  // Without `cids` (the usual case), the blocks of the packs need no de-duplication: `cid` is
  // the key of `blocks`. The UNION's hash of every block cost a fifth of the statement.
  const params: unknown[] = [packs, headsOf];
  let blk = 'blk AS MATERIALIZED (SELECT cid, refcount FROM blocks WHERE pack_id = ANY($1::bigint[]))';
  if (blocks.length > 0) {
    params.push(Buffer.concat(blocks), blocks.length);
    blk = `blk AS MATERIALIZED (
            SELECT cid, refcount FROM blocks WHERE pack_id = ANY($1::bigint[])
            UNION
            SELECT b.cid, b.refcount FROM generate_series(1, $4::int) AS i JOIN blocks b ON b.cid = substring($3::bytea FROM (i - 1) * 36 + 1 FOR 36))`;
  }
  const heads = 'SELECT head_cid AS cid FROM repos WHERE did = ANY($2::text[]) AND head_cid IS NOT NULL';
  const plan = opts.plan ?? 'lookup';
  let sql: string;
  if (plan === 'lookup') {
    sql = `WITH ${blk},
          counted AS MATERIALIZED (
            SELECT blk.cid, blk.refcount, (SELECT count(*) FROM records x WHERE x.cid = blk.cid) + (SELECT count(*) FROM events x WHERE x.cid = blk.cid) AS n FROM blk),
          heads AS (SELECT h.cid, count(*) AS n FROM (${heads}) h GROUP BY h.cid)
     SELECT c.cid, c.refcount, c.n + coalesce(h.n, 0) AS refs
     FROM counted c LEFT JOIN heads h ON h.cid = c.cid
     WHERE c.refcount <> c.n + coalesce(h.n, 0)`;
  } else {
    const rows =
      plan === 'join'
        ? `SELECT x.cid FROM records x JOIN blk ON blk.cid = x.cid
                UNION ALL SELECT x.cid FROM events x JOIN blk ON blk.cid = x.cid`
        : `SELECT x.cid FROM records x
                UNION ALL SELECT x.cid FROM events x WHERE x.cid IS NOT NULL`;
    sql = `WITH ${blk},
            refs AS (SELECT u.cid, count(*) AS n FROM (
                ${rows}
                UNION ALL ${heads}) u GROUP BY u.cid)
       SELECT blk.cid, blk.refcount, coalesce(refs.n, 0) AS refs
       FROM blk LEFT JOIN refs ON refs.cid = blk.cid
       WHERE blk.refcount <> coalesce(refs.n, 0)`;
  }
  const { rows } = await db.query<{ cid: Buffer; refcount: string; refs: string }>(sql, params);
  return rows.map((x) => ({ cid: x.cid, refcount: Number(x.refcount), refs: Number(x.refs) }));
}
