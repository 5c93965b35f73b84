/**
 * Stores a verified repo: diff against the record index, new blocks as one pack, then one
 * PostgreSQL transaction for the block index, records, events, refcounts, per-collection counts
 * and repo state. The pack reaches the blobstore before the transaction commits, so a crash leaves
 * at worst an unreferenced pack (garbage for GC), never an index row naming a missing pack; and
 * the transaction holds GC's lock shared, so no block it reuses is swept before it commits.
 * Every step is idempotent: a retried import converges, and an import of the same or an older
 * rev than the stored one changes nothing.
 *
 * Refcounts count the references stored rows hold: each `records` row to its record block, each
 * repo's `head_cid` to its commit, each event's `cid` to the record block it names. MST nodes are
 * reachable from a head rather than referenced by a row; GC's mark walk covers them.
 */
import type pg from 'pg';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { PackWriter, putPack, indexFreshPack } from '../storage/packs.ts';
import { copyRows } from '../storage/db/copy.ts';
import { GC_LOCK_KEY } from '../storage/db/locks.ts';
import { withTransaction } from '../storage/db/pool.ts';
import type { VerifiedRepo } from '../atproto/verify.ts';
import { cidBytes, latin1 } from '../atproto/cid.ts';
import { RefDeltas } from '../storage/refcounts.ts';
import { collectionFilter, type FilterOptions } from './filters.ts';

export interface ImportDeps {
  pool: pg.Pool;
  blobs: BlobStore;
}

export interface ImportInput {
  repo: VerifiedRepo;
  pds: string;
  handle: string | undefined;
  signingKey: string;
  filter: FilterOptions;
  /** Ephemeral mode: keep events (for this long), not the record index. */
  ephemeralRetentionSeconds?: number | undefined;
  /** Called after each step with its name, for benchmarks. */
  trace?: (step: string) => void;
}

export interface ImportCounts {
  created: number;
  updated: number;
  deleted: number;
  unchanged: number;
  newBlocks: number;
  packBytes: number;
}

export type ImportResult =
  | ({ kind: 'imported'; did: string; rev: string; packKey: string | undefined } & ImportCounts)
  | { kind: 'skipped'; did: string; rev: string; storedRev: string }
  | { kind: 'dropped'; did: string; rev: string; reason: string };

interface StoredRecord {
  cid: Buffer;
  collection: string;
  rkey: string;
}

async function storedRev(db: pg.ClientBase | pg.Pool, did: string, lock: boolean): Promise<{ rev: string | null; head: Buffer | null; status: string } | undefined> {
  const { rows } = await db.query<{ rev: string | null; head_cid: Buffer | null; status: string }>(
    `SELECT rev, head_cid, status FROM repos WHERE did = $1${lock ? ' FOR UPDATE' : ''}`,
    [did],
  );
  const r = rows[0];
  return r && { rev: r.rev, head: r.head_cid, status: r.status };
}

/** Revs are TIDs: base32-sortable, so string order is time order. */
function isNotNewer(rev: string, stored: string | null): stored is string {
  return stored !== null && rev <= stored;
}

export async function importRepo(deps: ImportDeps, input: ImportInput): Promise<ImportResult> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await importOnce(deps, input);
    } catch (err) {
      // Concurrent imports of repos that share blocks can collide: one indexes a block between
      // our check and our COPY (unique violation, 23505), or the two lock shared block rows in
      // opposite order across their insert and update phases (deadlock, 40P01; PostgreSQL
      // aborts one of them). Both roll back whole, so trying again is safe; the next attempt's
      // check sees the other import's blocks. Anything else is not ours to absorb.
      const code = (err as { code?: string }).code;
      if ((code !== '23505' && code !== '40P01') || attempt >= 5) throw err;
      await new Promise((r) => setTimeout(r, Math.random() * 50 * attempt));
    }
  }
}

async function importOnce(deps: ImportDeps, input: ImportInput): Promise<ImportResult> {
  const { repo } = input;
  const trace = input.trace ?? (() => {});
  const did = repo.did;

  const before = await storedRev(deps.pool, did, false);
  if (before?.status === 'active' && isNotNewer(repo.rev, before.rev)) {
    return { kind: 'skipped', did, rev: repo.rev, storedRev: before.rev };
  }

  const filter = collectionFilter(input.filter);
  if (!filter.keepsRepo(new Set(repo.records.map((r) => r.collection)))) {
    await dropRepo(deps.pool, did, 'dropped', { rev: repo.rev, reason: 'no record in a signal collection' });
    return { kind: 'dropped', did, rev: repo.rev, reason: `no record in a signal collection (${input.filter.signal.join(', ')})` };
  }
  const ephemeral = input.ephemeralRetentionSeconds !== undefined;

  // The record index as stored (empty in ephemeral mode: nothing is kept to diff against).
  const stored = new Map<string, StoredRecord>();
  if (!ephemeral) {
    const { rows } = await deps.pool.query<{ collection: string; rkey: string; cid: Buffer }>(
      'SELECT collection, rkey, cid FROM records WHERE did = $1',
      [did],
    );
    for (const r of rows) stored.set(`${r.collection}/${r.rkey}`, r);
  }

  trace('load stored records');
  const creates: StoredRecord[] = [];
  const updates: (StoredRecord & { prev: Buffer })[] = [];
  let unchanged = 0;
  const seen = new Set<string>();
  /** Blocks of new record versions: base32 CID → bytes. */
  const newVersions = new Map<string, Buffer>();
  for (const rec of repo.records) {
    if (!filter.keeps(rec.collection)) continue;
    seen.add(rec.path);
    const cid = cidBytes(rec.cid);
    const old = stored.get(rec.path);
    if (!old) {
      creates.push({ cid, collection: rec.collection, rkey: rec.rkey });
      newVersions.set(rec.cid, cid);
    } else if (!old.cid.equals(cid)) {
      updates.push({ cid, collection: rec.collection, rkey: rec.rkey, prev: old.cid });
      newVersions.set(rec.cid, cid);
    } else unchanged++;
  }
  const deletes: StoredRecord[] = [];
  for (const [path, old] of stored) if (!seen.has(path)) deletes.push(old);

  trace('diff');
  // The blocks this state is made of: the commit, every MST node, every kept record's block.
  const stateBlocks = new Set<string>([repo.commitCid, ...repo.mstNodes]);
  for (const rec of repo.records) if (filter.keeps(rec.collection)) stateBlocks.add(rec.cid);
  // Of those, only the commit, the MST nodes and new record versions can be missing from the
  // index: an unchanged record's block is held by its row (refcount ≥ 1), which GC never sweeps.
  const candidates = new Map<string, Buffer>(newVersions);
  for (const c of [repo.commitCid, ...repo.mstNodes]) if (!candidates.has(c)) candidates.set(c, cidBytes(c));
  const newRecordCids = [...creates, ...updates].map((r) => r.cid);
  const head = cidBytes(repo.commitCid);
  const events = [
    ...creates.map((r) => ({ kind: 'create', collection: r.collection, rkey: r.rkey, cid: r.cid as Buffer | null, prev: null as Buffer | null })),
    ...updates.map((r) => ({ kind: 'update', collection: r.collection, rkey: r.rkey, cid: r.cid as Buffer | null, prev: r.prev as Buffer | null })),
    ...deletes.map((r) => ({ kind: 'delete', collection: r.collection, rkey: r.rkey, cid: null as Buffer | null, prev: r.cid as Buffer | null })),
  ];
  let uploaded: Promise<void> = Promise.resolve();
  return withTransaction(deps.pool, async (tx) => {
    await tx.query(`INSERT INTO repos (did) VALUES ($1) ON CONFLICT (did) DO NOTHING`, [did]);
    const locked = await storedRev(tx, did, true);
    trace('lock repo');
    if (locked?.status === 'active' && isNotNewer(repo.rev, locked.rev)) {
      return { kind: 'skipped', did, rev: repo.rev, storedRev: locked.rev } as const;
    }
    // GC sweeps under this lock held exclusively: holding it shared from before the check until
    // COMMIT means no block this import finds indexed (and so does not store again) is deleted
    // before the import's references to it are visible.
    await tx.query('SELECT pg_advisory_xact_lock_shared($1)', [GC_LOCK_KEY]);
    const indexed = await indexedAmong(tx, [...candidates.values()]);
    trace('check indexed blocks');
    const writer = new PackWriter();
    for (const [cidStr, cid] of candidates) {
      if (indexed.has(latin1(cid, 0, cid.length))) continue;
      const data = repo.blocks.get(cidStr);
      // verifyRepo guarantees every reachable block is present; a miss here is a bug, not bad input.
      if (!data) throw new Error(`verified repo ${did} lacks block ${cidStr}`);
      writer.add(cid, data);
    }
    const pack = writer.blockCount > 0 ? writer.finish() : undefined;
    trace('build pack');
    // The upload overlaps the database work below and is awaited before COMMIT: the index rows
    // never become visible before the pack they name is in the blobstore.
    uploaded = pack ? putPack(deps.blobs, pack) : Promise.resolve();
    uploaded.catch(() => {}); // observed below; this only keeps an early failure from going unhandled

    // Every reference this import adds or drops: record rows, events, the head.
    const deltas = new RefDeltas();
    if (!ephemeral) {
      for (const c of newRecordCids) deltas.add(c, 1);
      for (const u of updates) deltas.add(u.prev, -1);
      for (const d of deletes) deltas.add(d.cid, -1);
    }
    for (const e of events) if (e.cid) deltas.add(e.cid, 1);
    deltas.add(head, 1);
    if (locked?.head) deltas.add(locked.head, -1);
    trace('sum refcounts');
    // New blocks are inserted with their refcount; only blocks indexed before get an UPDATE.
    const indexedPack = pack ? await indexFreshPack(tx, pack, (cid) => deltas.get(cid)) : undefined;
    await deltas.apply(tx, indexedPack?.inserted ?? []);

    trace('index blocks, refcounts');
    if (!ephemeral) {
      if (deletes.length > 0) {
        await tx.query(
          `DELETE FROM records r USING unnest($2::text[], $3::text[]) AS t(c, k)
           WHERE r.did = $1 AND r.collection = t.c AND r.rkey = t.k`,
          [did, deletes.map((d) => d.collection), deletes.map((d) => d.rkey)],
        );
      }
      // Creates are paths the locked repo does not have, so COPY cannot conflict.
      await copyRows(tx, 'records', ['did', 'collection', 'rkey', 'cid'], creates.map((r) => [did, r.collection, r.rkey, r.cid]));
      for (let i = 0; i < updates.length; i += 20_000) {
        const batch = updates.slice(i, i + 20_000);
        await tx.query(
          `UPDATE records r SET cid = t.v FROM unnest($2::text[], $3::text[], $4::bytea[]) AS t(c, k, v)
           WHERE r.did = $1 AND r.collection = t.c AND r.rkey = t.k`,
          [did, batch.map((r) => r.collection), batch.map((r) => r.rkey), batch.map((r) => r.cid)],
        );
      }
      await tx.query('DELETE FROM collection_counts WHERE did = $1', [did]);
      await tx.query(
        `INSERT INTO collection_counts (did, collection, count)
         SELECT did, collection, count(*) FROM records WHERE did = $1 GROUP BY did, collection`,
        [did],
      );
    }

    trace('records, counts');
    const expires = ephemeral ? new Date(Date.now() + input.ephemeralRetentionSeconds! * 1000) : null;
    await copyRows(
      tx,
      'events',
      ['did', 'kind', 'collection', 'rkey', 'cid', 'prev_cid', 'rev', 'origin', 'expires_at'],
      events.map((e) => [did, e.kind, e.collection, e.rkey, e.cid, e.prev, repo.rev, 'backfill', expires]),
    );

    trace('events');
    await uploaded;
    trace('await pack upload');
    // An account that was gone or deleted and serves its repo again: the event log says so, as
    // it said when the account went.
    if (locked && (locked.status === 'gone' || locked.status === 'deleted')) {
      await tx.query(`INSERT INTO events (did, kind, rev, origin, detail) VALUES ($1, 'account', $2, 'backfill', $3)`, [did, repo.rev, JSON.stringify({ status: 'active', was: locked.status })]);
    }
    const recordsCount = ephemeral ? 0 : stored.size + creates.length - deletes.length;
    await tx.query(
      `UPDATE repos SET status = 'active', gone_status = NULL, rev = $2, head_cid = $3, data_cid = $4,
         pds = $5, handle = $6, signing_key = $7, resync_kind = NULL, resync_count = 0, next_retry_at = NULL,
         last_error = NULL, records_count = $8, blocks_count = $9, last_imported_at = now(), updated_at = now()
       WHERE did = $1`,
      [did, repo.rev, head, cidBytes(repo.dataCid), input.pds, input.handle ?? null, input.signingKey, recordsCount, stateBlocks.size],
    );
    trace('repo state');
    return {
      kind: 'imported',
      did,
      rev: repo.rev,
      packKey: pack?.key,
      created: creates.length,
      updated: updates.length,
      deleted: deletes.length,
      unchanged,
      newBlocks: pack?.entries.length ?? 0,
      packBytes: pack?.bytes.length ?? 0,
    } as const;
  });
}

/**
 * Which of `cids` the block index holds, as latin1 strings of their bytes. The CIDs go to the
 * server as one binary parameter of 36-byte slices: a bytea[] would travel as hex text, which
 * cost more than the lookup itself.
 */
async function indexedAmong(db: pg.ClientBase, cids: Buffer[]): Promise<Set<string>> {
  const out = new Set<string>();
  const width = 36;
  for (let i = 0; i < cids.length; i += 50_000) {
    const batch = cids.slice(i, i + 50_000);
    if (batch.some((c) => c.length !== width)) throw new Error('indexedAmong takes 36-byte CIDs (CIDv1, SHA-256)');
    const { rows } = await db.query<{ cid: Buffer }>(
      `SELECT cid FROM blocks WHERE cid IN (SELECT substring($1::bytea FROM i * ${width} + 1 FOR ${width}) FROM generate_series(0, $2::int - 1) AS i)`,
      [Buffer.concat(batch), batch.length],
    );
    for (const r of rows) out.add(latin1(r.cid, 0, r.cid.length));
  }
  return out;
}

/**
 * Removes a repo's records, events and the references they held, and sets its status:
 * `deleted` (the PDS no longer has it) or `dropped` (filter mode: no signal collection).
 */
export async function dropRepo(pool: pg.Pool, did: string, status: 'deleted' | 'dropped', detail: { rev?: string; reason: string }): Promise<void> {
  await withTransaction(pool, async (tx) => {
    await tx.query(`INSERT INTO repos (did) VALUES ($1) ON CONFLICT (did) DO NOTHING`, [did]);
    const locked = await storedRev(tx, did, true);
    const deltas = new RefDeltas();
    const recs = await tx.query<{ cid: Buffer }>('DELETE FROM records WHERE did = $1 RETURNING cid', [did]);
    for (const r of recs.rows) deltas.add(r.cid, -1);
    const evs = await tx.query<{ cid: Buffer | null }>('DELETE FROM events WHERE did = $1 RETURNING cid', [did]);
    for (const e of evs.rows) if (e.cid) deltas.add(e.cid, -1);
    if (locked?.head) deltas.add(locked.head, -1);
    await deltas.apply(tx);
    await tx.query('DELETE FROM collection_counts WHERE did = $1', [did]);
    await tx.query(
      `INSERT INTO events (did, kind, rev, origin, detail) VALUES ($1, 'account', $2, 'backfill', $3)`,
      [did, detail.rev ?? null, JSON.stringify({ status, reason: detail.reason })],
    );
    await tx.query(
      `UPDATE repos SET status = $2, gone_status = NULL, rev = NULL, head_cid = NULL, data_cid = NULL,
         resync_kind = NULL, resync_count = 0, next_retry_at = NULL, last_error = $3,
         records_count = 0, blocks_count = 0, updated_at = now()
       WHERE did = $1`,
      [did, status, detail.reason],
    );
  });
}
