/**
 * Repo: the `repos` row, and with it (in one read-only REPEATABLE READ transaction, so the walk
 * sees one consistent state of the repo: its head is read once) the record index, the event log
 * and the block index of the packs that hold most of the repo's blocks — the packs of its own
 * imports — so that the blocks below it are located without a lookup each. Steps to its head
 * commit, its record rows and its events.
 *
 * The bulk reads come packed (`packed.ts`): one row per collection, one for the events, one per
 * pack.
 */
import type pg from 'pg';
import type { BlockLoc, NodeOf, OutEdge } from '../nodes.ts';
import { EVENT_SQL, LOC_SQL, RECORD_SQL, readEvents, readLocsInto, readRecords } from '../packed.ts';
import type { LocationTable } from '../locations.ts';
import type { EventRow, IndexRow, RefcountScan, RepoRow, StepContext, StepData, StepResult } from './context.ts';
import { cidMapKey } from '../blocks.ts';
import { refcountMismatchesInPacks } from '../../storage/validate-queries.ts';

/**
 * A pack's index is read in bulk when the repo's records in it are at least this share of the
 * pack's bytes; a pack that holds one of the repo's records among a million others' is not.
 */
const PREFETCH_SHARE = 1 / 8;

export async function stepRepo(node: NodeOf<'Repo'>, ctx: StepContext): Promise<StepResult<'Repo'>> {
  const wants = {
    records: ctx.wants('RepoToRecordRow') || ctx.needs.recordIndex,
    events: ctx.wants('RepoToEvent'),
    counts: ctx.needs.collectionCounts,
    // The packs' block index pays off when the walk goes below the head or to the records.
    locations: ctx.wants('RepoToCommit') || ctx.wants('RepoToRecordRow') || ctx.wants('RepoToEvent'),
    refcounts: ctx.needs.refcounts,
  };
  const client = await ctx.pool.connect();
  let data: StepData['Repo'];
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    data = await readRepo(client, node.did, wants, ctx.scope.locations);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    client.release();
    throw err;
  }
  client.release();

  const edges: OutEdge[] = [];
  const row = data.row;
  if (row) {
    if (row.headCid && data.headLoc && ctx.wants('RepoToCommit')) {
      edges.push({
        type: 'RepoToCommit',
        node: { type: 'Commit', cid: row.headCid, loc: data.headLoc, repo: { did: row.did, rev: row.rev, dataCid: row.dataCid, signingKey: row.signingKey } },
      });
    }
    if (data.records && ctx.wants('RepoToRecordRow')) {
      for (const r of data.records) {
        edges.push({
          type: 'RepoToRecordRow',
          node: { type: 'RecordRow', did: row.did, collection: r.collection, rkey: r.rkey, row: { cid: r.cid } },
          path: `${r.collection}/${r.rkey}`,
        });
      }
    }
    if (data.events) {
      for (const e of data.events) {
        edges.push({
          type: 'RepoToEvent',
          node: { type: 'Event', id: e.id, row: { did: row.did, kind: e.kind, collection: e.collection, rkey: e.rkey, cid: e.cid } },
          ...(e.collection !== null && e.rkey !== null ? { path: `${e.collection}/${e.rkey}` } : {}),
        });
      }
    }
  }
  return { data, edges, bytes: 0 };
}

async function readRepo(
  db: pg.ClientBase,
  did: string,
  wants: { records: boolean; events: boolean; counts: boolean; locations: boolean; refcounts: boolean },
  locations: LocationTable,
): Promise<StepData['Repo']> {
  const { rows } = await db.query<{
    did: string;
    status: string;
    gone_status: string | null;
    rev: string | null;
    head_cid: Buffer | null;
    data_cid: Buffer | null;
    signing_key: string | null;
    records_count: string;
    head_pack: string | null;
    head_key: string | null;
    head_size: string | null;
    head_offset: string | null;
    head_length: number | null;
    head_refcount: string | null;
  }>(
    `SELECT r.did, r.status, r.gone_status, r.rev, r.head_cid, r.data_cid, r.signing_key, r.records_count,
       b.pack_id AS head_pack, p.key AS head_key, p.size_bytes AS head_size, b.byte_offset AS head_offset,
       b.byte_length AS head_length, b.refcount AS head_refcount
     FROM repos r LEFT JOIN blocks b ON b.cid = r.head_cid LEFT JOIN packs p ON p.id = b.pack_id
     WHERE r.did = $1`,
    [did],
  );
  const r = rows[0];
  if (!r) return { row: null, records: null, events: null, collectionCounts: null, headLoc: null, refcounts: null };
  const row: RepoRow = {
    did: r.did,
    status: r.status,
    goneStatus: r.gone_status,
    rev: r.rev,
    headCid: r.head_cid,
    dataCid: r.data_cid,
    signingKey: r.signing_key,
    recordsCount: Number(r.records_count),
  };
  const headLoc: BlockLoc | null =
    r.head_pack === null
      ? null
      : { packId: Number(r.head_pack), packKey: r.head_key, packSize: Number(r.head_size ?? 0), offset: Number(r.head_offset), length: r.head_length!, refcount: Number(r.head_refcount) };

  let records: IndexRow[] | null = null;
  if (wants.records) {
    records = [];
    const res = await db.query<{ collection: string; packed: Buffer }>(
      `SELECT r.collection, string_agg(${RECORD_SQL}, ''::bytea ORDER BY r.rkey) AS packed FROM records r WHERE r.did = $1 GROUP BY r.collection ORDER BY r.collection`,
      [did],
    );
    for (const g of res.rows) for (const rec of readRecords(g.packed, g.collection)) records.push(rec);
  }

  let events: EventRow[] | null = null;
  if (wants.events) {
    const res = await db.query<{ packed: Buffer | null }>(`SELECT string_agg(${EVENT_SQL}, ''::bytea ORDER BY e.id) AS packed FROM events e WHERE e.did = $1`, [did]);
    events = res.rows[0]?.packed ? [...readEvents(res.rows[0].packed)] : [];
  }

  let collectionCounts: Map<string, number> | null = null;
  if (wants.counts) {
    const res = await db.query<{ collection: string; count: string }>('SELECT collection, count FROM collection_counts WHERE did = $1', [did]);
    collectionCounts = new Map(res.rows.map((x) => [x.collection, Number(x.count)]));
  }

  let refcounts: RefcountScan | null = null;
  if (wants.locations) {
    // The packs the repo's records sit in, with the repo's share of each; and the head's pack.
    const share = await db.query<{ pack_id: string; bytes: string; size: string | null }>(
      `SELECT b.pack_id, sum(b.byte_length) AS bytes, max(p.size_bytes) AS size
       FROM records r JOIN blocks b ON b.cid = r.cid LEFT JOIN packs p ON p.id = b.pack_id
       WHERE r.did = $1 GROUP BY b.pack_id`,
      [did],
    );
    const packs = new Set(share.rows.filter((s) => s.size !== null && Number(s.bytes) >= Number(s.size) * PREFETCH_SHARE).map((s) => Number(s.pack_id)));
    if (headLoc) packs.add(headLoc.packId);
    if (packs.size > 0) {
      const res = await db.query<{ pack_id: string; key: string | null; size_bytes: string | null; packed: Buffer }>(
        `SELECT b.pack_id, p.key, p.size_bytes, string_agg(${LOC_SQL}, ''::bytea) AS packed
         FROM blocks b LEFT JOIN packs p ON p.id = b.pack_id
         WHERE b.pack_id = ANY($1::bigint[]) GROUP BY b.pack_id, p.key, p.size_bytes`,
        [[...packs]],
      );
      for (const g of res.rows) readLocsInto(g.packed, locations, { id: Number(g.pack_id), key: g.key, size: Number(g.size_bytes ?? 0) });
      if (wants.refcounts) refcounts = { packs, mismatches: new Map((await refcountMismatchesInPacks(db, [...packs])).map((m) => [cidMapKey(m.cid), { refcount: m.refcount, refs: m.refs }])) };
    }
  }
  return { row, records, events, collectionCounts, headLoc, refcounts };
}
