/**
 * The store path backfill and live sync share: many changes to many repos (full verified repos,
 * verified commits, account and identity changes) stored as ONE pack of the batch's new blocks
 * and ONE PostgreSQL transaction (block index, records, events, refcounts, collection counts,
 * repo state, and the caller's cursor), with each change's outcome its own: a replay is
 * skipped, a commit that does not follow the stored state is a gap, a filtered repo is dropped,
 * and none of these fails the others.
 *
 * Invariants (they were the single-repo importer's, and hold per batch):
 * - The pack reaches the blobstore before the transaction commits, so a crash leaves at worst an
 *   unreferenced pack (garbage for GC), never an index row naming a missing pack.
 * - The transaction holds GC's lock shared from before it checks which blocks are indexed until
 *   COMMIT, so no block it reuses is swept before its references are visible.
 * - Refcounts count the references stored rows hold: each `records` row to its record block, each
 *   repo's `head_cid` to its commit, each event's `cid` to the record block it names. MST nodes are
 *   reachable from a head rather than referenced by a row; GC's mark walk covers them.
 * - Every step is idempotent: a retried batch converges, and a change at or below the stored rev
 *   changes nothing. Repo rows are locked in DID order and block rows in CID order; a deadlock or
 *   unique violation against a concurrent batch rolls back whole and is retried.
 * - Per-repo order: the changes of one repo are decided in the order given, each against the
 *   state the ones before it left.
 */
import type pg from 'pg';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { layOutPack, putPack, type LaidOutPack } from '../storage/packs.ts';
import { copyBinary } from '../storage/db/copy.ts';
import { GC_LOCK_KEY } from '../storage/db/locks.ts';
import { withTransaction } from '../storage/db/pool.ts';
import { EVENT_WRITER } from '../storage/event-horizon.ts';
import { CID_LENGTH, cidBytes } from '../atproto/cid.ts';
import type { BatchOptions, BatchResult, ChangeOutcome, RepoChange } from './changes.ts';
import { decideAccount, decideCommit, decideIdentity, decideSnapshot, type DecideContext, type PendingEvent } from './decide.ts';
import { BlockRefs, type BlockGroups } from './block-refs.ts';
import { decideSnapshotPlan, loadStoredRecords, type SnapshotPlan, type StoredRecords } from './snapshot.ts';
import type { RecordList } from '../atproto/record-list.ts';
import { viewOf, type RepoView, type StoredRow } from './view.ts';
import { wipeRepoRows } from './wipe.ts';
import { writePackCarPlan } from '../storage/car-plans.ts';
import { release } from '../atproto/typed-arrays.ts';

export interface StoreDeps {
  pool: pg.Pool;
  blobs: BlobStore;
}

function didOf(c: RepoChange): string {
  return c.kind === 'snapshot' ? c.repo.did : c.did;
}

/**
 * Stores `changes` in one pack and one transaction and returns one outcome per change, in the
 * same order. Throws only for the worker's own trouble (database, blobstore): then nothing of the
 * batch is stored and the whole batch may be retried.
 */
export async function storeBatch(deps: StoreDeps, changes: RepoChange[], options: BatchOptions): Promise<BatchResult> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await storeOnce(deps, changes, options);
    } catch (err) {
      // Concurrent batches that share blocks or new repos can collide: one indexes a block
      // between our check and our COPY, or inserts the row of a repo we found missing (unique
      // violation, 23505), or the two lock rows in opposite order across their phases (deadlock,
      // 40P01; PostgreSQL aborts one of them). All roll back whole, so trying again is safe; the
      // next attempt sees the other batch's blocks and rows.
      const code = (err as { code?: string }).code;
      if ((code !== '23505' && code !== '40P01') || attempt >= 5) throw err;
      await new Promise((r) => setTimeout(r, Math.random() * 50 * attempt));
    }
  }
}

/**
 * Planner settings for a batch's transaction. Every statement of a batch names its rows by key (a
 * batch holds at most some thousands of them) in tables that grow with the mirror: records,
 * blocks, events, collection_counts, repos. Costing a random page at four sequential ones, the
 * planner instead read a table of up to some hundred thousand rows whole into a hash to join a
 * batch's keys against it (the touched-records lookup, the count and repo-state updates): on the
 * sync bench's mirror of 40,000 records, 26 ms for a batch's 500 lookups against 4 ms through
 * the key, and growing with the mirror until the table is large enough for the planner to switch.
 * With sequential scans, hash and merge joins off, each statement probes the indexes for the
 * batch's keys, a cost that does not grow with the mirror.
 */
const KEYED_PLANS = { enable_seqscan: 'off', enable_hashjoin: 'off', enable_mergejoin: 'off' } as const;

async function storeOnce(deps: StoreDeps, changes: RepoChange[], options: BatchOptions): Promise<BatchResult> {
  const trace = options.trace ?? (() => {});
  const ephemeral = options.ephemeralRetentionSeconds !== undefined;
  const filter = options.filter;
  const dids = [...new Set(changes.map(didOf))].sort();
  // A snapshot that is its repo's only change in the batch (every backfill) is decided compactly
  // (snapshot.ts); one that shares the batch with other changes of its repo goes through the
  // per-path view they read.
  const perDid = new Map<string, number>();
  for (const c of changes) perDid.set(didOf(c), (perDid.get(didOf(c)) ?? 0) + 1);
  const solo = (c: RepoChange) => c.kind === 'snapshot' && perDid.get(c.repo.did) === 1;
  let uploaded: Promise<void> = Promise.resolve();
  // An event writer (storage/event-horizon.ts): the event stream sends no id past the first this
  // batch takes until the batch has ended.
  return withTransaction(deps.pool, async (tx) => {
    // The repo rows of the batch that exist are locked, in DID order, and then (once all of them
    // are: the count reads the whole select first) GC's lock is taken shared. GC sweeps under that
    // lock held exclusively: holding it shared from before the index check until COMMIT means no
    // block this batch finds indexed (and so does not store again) is deleted before the batch's
    // references to it are visible. Rows first, then GC's lock, as every writer takes them. A
    // row that an in-flight transaction locked or updated is waited for; one it inserted is not
    // seen. A repo without a row is decided from the state a new row has and its row is inserted
    // with its state at the end (insertRepos): one write per new repo, and none for the repos
    // that exist (an insert of every DID with ON CONFLICT DO NOTHING probed the key of each, every
    // batch). A row another transaction inserted meanwhile makes that insert fail with a unique
    // violation, and the batch is retried, now finding the row. The LEFT JOIN makes the advisory
    // lock's row, and so the lock, come whether or not any row exists. (The batch's fixed
    // statements are named: each connection parses and plans them once.)
    const locked = await tx.query<StoredRow & { gc_locked: boolean }>({
      name: 'ingest-lock-repos',
      text: `WITH l AS (
         SELECT r.did, r.status, r.gone_status, r.rev, r.head_cid, r.data_cid, r.pds, r.handle, r.signing_key, r.records_count, r.blocks_count, r.last_error
         FROM repos r WHERE r.did = ANY($1::text[]) ORDER BY r.did FOR UPDATE
       ), gc AS (SELECT pg_advisory_xact_lock_shared($2) IS NULL AS gc_locked FROM (SELECT count(*) FROM l) AS done)
       SELECT l.*, gc.gc_locked FROM gc LEFT JOIN l ON true`,
      values: [dids, GC_LOCK_KEY],
    });
    const stored = new Map<string, StoredRow>();
    for (const r of locked.rows) if (r.did !== null) stored.set(r.did, r);
    const views = new Map<string, RepoView>();
    const newRepos = new Set<string>();
    for (const did of dids) {
      const row = stored.get(did);
      if (!row) newRepos.add(did);
      views.set(did, viewOf(row ?? newRepoRow(did)));
    }
    trace('lock repo');
    let storedOf = new Map<string, StoredRecords>();
    if (!ephemeral) {
      await loadRecords(tx, changes.filter((c) => !solo(c)), views);
      // Only repos that hold records have any; a repo's first import loads nothing.
      const holding = changes.filter((c) => solo(c) && views.get(didOf(c))!.recordsCount > 0).map(didOf);
      storedOf = await loadStoredRecords(tx, holding);
    }
    trace('load stored records');

    const ctx: DecideContext = {
      filter,
      ephemeral,
      hasSignal: filter.dropsRepos,
      writes: { events: [], candidates: new Map(), owner: new Map() },
      current: 0,
    };
    const outcomes: ChangeOutcome[] = changes.map((c, i) => {
      ctx.current = i;
      const view = views.get(didOf(c))!;
      switch (c.kind) {
        case 'snapshot':
          return solo(c) ? decideSnapshotPlan(ctx, view, c, storedOf.get(view.did)) : decideSnapshot(ctx, view, c);
        case 'commit':
          return decideCommit(ctx, view, c);
        case 'account':
          return decideAccount(ctx, view, c);
        case 'identity':
          return decideIdentity(ctx, view, c);
      }
    });
    trace('diff');

    // Every block the batch may store and every reference it adds or drops, summed per block.
    const refs = new BlockRefs();
    for (const view of views.values()) if (view.wipe) await wipeRepoRows(tx, view.did, refs);
    for (const [cidStr, data] of ctx.writes.candidates) refs.looseBlock(cidBytes(cidStr), 0, 0, data, ctx.writes.owner.get(cidStr)!);
    const rows = recordWrites(views);
    if (!ephemeral) {
      for (const r of rows.inserts) refs.add(r.cur!, 1);
      for (const r of rows.updates) {
        refs.add(r.cur!, 1);
        refs.add(r.orig!, -1);
      }
      for (const r of rows.deletes) refs.add(r.orig!, -1);
    }
    const plans = ctx.writes.events.filter((e): e is SnapshotPlan => e.kind === 'plan');
    const expires = ephemeral ? new Date(Date.now() + options.ephemeralRetentionSeconds! * 1000) : null;
    // A large batch (a large repo's first import) has PostgreSQL write its records and events
    // while this process sums the references, checks the index on a second connection and lays
    // out the pack (see OVERLAP_ROWS); a small one writes them after the block index, as it
    // always did. The rows' references are summed above, before writeRecords adds the plans'
    // updates and deletes to `rows`.
    const overlap = rowsToWrite(rows, ctx.writes.events) >= (options.overlapRows ?? OVERLAP_ROWS) && hasSpareConnection(deps.pool);
    const writeRows = async (step: typeof trace) => {
      if (!ephemeral) await writeRecords(tx, rows, plans, views);
      step('records, counts');
      await writeEvents(tx, ctx.writes.events, options.origin, expires);
      step('events');
    };
    const early = overlap ? writeRows(() => {}) : undefined;
    // Observed below (awaited before the block index); this only keeps an early failure from going unhandled.
    early?.catch(() => {});
    const perChange = changes.map(() => ({ newBlocks: 0, blockBytes: 0 }));
    let newBlocks = 0;
    let pack: LaidOutPack | undefined;
    try {
      for (const e of ctx.writes.events) {
        if (e.kind === 'plan') addPlanRefs(refs, e);
        else if (e.cid) refs.add(e.cid, 1);
      }
      for (const v of views.values()) {
        if (v.head) refs.add(v.head, 1);
        if (v.origHead) refs.add(v.origHead, -1);
      }
      let groups: BlockGroups | undefined = refs.group();
      trace('sum refcounts');

      // On a second connection, the check is safe beside the batch's transaction: the batch holds
      // GC's lock shared from before, so no block it finds indexed is swept before the batch
      // commits, and a block another batch indexes after it fails the batch's COPY (a unique
      // violation, retried), as after a check on the batch's own connection.
      let fresh: Uint8Array | undefined = overlap
        ? await withTransaction(deps.pool, (side) => freshAmong(side, groups!), { settings: KEYED_PLANS })
        : await freshAmong(tx, groups);
      trace('check indexed blocks');
      for (let g = 0; g < groups.count; g++) newBlocks += fresh[g]!;
      let inPack: Int32Array | undefined = new Int32Array(newBlocks);
      for (let g = 0, i = 0; g < groups.count; g++) if (fresh[g]) inPack[i++] = g;
      pack = newBlocks > 0 ? layOutPack(newBlocks, (i) => groups!.cidAt(inPack![i]!), (i) => groups!.dataAt(inPack![i]!)) : undefined;
      for (let i = 0; i < newBlocks; i++) {
        const mine = perChange[groups.ownerAt(inPack[i]!)]!;
        mine.newBlocks++;
        mine.blockBytes += pack!.lengths[i]!;
      }
      trace('build pack');
      // The upload overlaps the database work below and is awaited before COMMIT: the index rows
      // never become visible before the pack they name is in the blobstore.
      uploaded = pack ? putPack(deps.blobs, pack) : Promise.resolve();
      uploaded.catch(() => {}); // observed below; this only keeps an early failure from going unhandled

      // New blocks are inserted with their refcount; only blocks indexed before get an UPDATE. (One
      // INSERT … ON CONFLICT DO UPDATE in place of the check, the COPY and the update measured 4-7 %
      // more PostgreSQL CPU per carried block than the per-CID EXISTS check and the COPY together,
      // batches of 13,000 new blocks into 1.3 million, and the array check costs about a third of
      // that EXISTS check: the upsert inserts row by row, each a speculative insertion, where COPY
      // inserts in bulk. And the pack, laid out before it, would carry the blocks it found indexed
      // as dead bytes.)
      if (early) {
        await early;
        trace('await records, counts, events');
      }
      if (pack) await indexNewBlocks(tx, pack, inPack, groups);
      await updateRefcounts(tx, groups, fresh);
      // What only the block index needed is let go before the rows are written (when they are
      // written after it): a large repo's groups are tens of bytes a block. Freed now, not at
      // the next full collection.
      groups.release();
      release(inPack);
      release(fresh);
      groups = inPack = fresh = undefined;
      trace('index blocks, refcounts');
    } catch (err) {
      // The rows' statements are queued on the transaction's connection: let them end before
      // the ROLLBACK is sent after them.
      await early?.catch(() => {});
      throw err;
    }

    if (!early) await writeRows(trace);
    await writeRepoState(tx, [...views.values()].filter((v) => v.dirty && !newRepos.has(v.did)), options.goneRecheckSeconds);
    await insertRepos(tx, [...newRepos].map((did) => views.get(did)!), options.goneRecheckSeconds);
    // A repo stored whole in a pack of its own (a first import): its getRepo CAR is that pack.
    const only = changes.length === 1 && changes[0]!.kind === 'snapshot' ? changes[0]!.repo : undefined;
    if (pack && only && outcomes[0]!.kind === 'imported' && newBlocks === only.blocks.size) await writePackCarPlan(tx, only.did, cidBytes(only.commitCid), pack);
    if (options.cursor) {
      await tx.query(
        `INSERT INTO job_state (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()`,
        [options.cursor.key, JSON.stringify('valueAfter' in options.cursor ? options.cursor.valueAfter(outcomes) : options.cursor.value)],
      );
    }
    if (options.alsoInTransaction) await options.alsoInTransaction(tx);
    await uploaded;
    trace('await pack upload');
    return { outcomes, perChange, packKey: pack?.key, newBlocks, packBytes: pack?.size ?? 0 };
  }, { ...EVENT_WRITER, settings: KEYED_PLANS });
}

/**
 * Rows a batch writes past which its records and events are written while the process works on
 * the block index (a large repo's first import). On one connection PostgreSQL's work is serial,
 * and the process's between its statements (summing references, checking the index, laying out
 * the pack) left it idle: a first import of 100,000 records, alternating with the order before,
 * 39,900 against 34,500 records/s (medians of eight). Below this, the batch's statements are
 * short and the order stays as it was.
 */
const OVERLAP_ROWS = 20_000;

/** The records rows and events a batch writes: its views' rows, its events, and what its plans change. */
function rowsToWrite(rows: ReturnType<typeof recordWrites>, events: (PendingEvent | SnapshotPlan)[]): number {
  let n = rows.inserts.length + rows.updates.length + rows.deletes.length;
  for (const e of events) {
    if (e.kind !== 'plan') {
      n++;
      continue;
    }
    n += e.deleted.length + e.after.length;
    for (let i = 0; i < e.change.length; i++) if (e.change[i] !== 0) n++;
  }
  return n;
}

/**
 * Whether the pool can give a connection at once: one is idle, or it may open another, and no
 * one waits. The indexed-blocks check then runs there while the transaction's connection writes
 * rows; a batch never waits on another's connection for it (which could deadlock a full pool).
 */
function hasSpareConnection(pool: pg.Pool): boolean {
  const max = (pool as unknown as { options: { max?: number } }).options.max ?? 10;
  return pool.waitingCount === 0 && (pool.idleCount > 0 || pool.totalCount < max);
}

/** A plan's blocks and references: each new record version is held by its row and its event. */
function addPlanRefs(refs: BlockRefs, plan: SnapshotPlan): void {
  const { list, change, prev, stored, owner } = plan;
  const blocks = list.blocks;
  const source = refs.source(blocks);
  const gained = plan.eventsOnly ? 1 : 2;
  let entries = plan.deleted.length + plan.treeBlocks.length;
  for (let i = 0; i < change.length; i++) entries += change[i]!;
  refs.reserve(entries);
  for (let i = 0; i < change.length; i++) {
    const c = change[i]!;
    if (c === 0) continue;
    refs.block(source, list.blockAt(i), gained, owner);
    if (c === 2) refs.ref(stored.cids, prev![i]! * CID_LENGTH, -1);
  }
  for (const j of plan.deleted) refs.ref(stored.cids, j * CID_LENGTH, -1);
  // Only the commit, the MST nodes and new record versions can be missing from the index: an
  // unchanged record's block is held by its row (refcount ≥ 1), which GC never sweeps.
  for (const b of plan.treeBlocks) refs.block(source, b, 0, owner);
}

/** CIDs a check asks about at once: 360 kB of parameter (at 50,000, 1.8 MB held at a large import's peak). */
const CHECK_BATCH = 10_000;

/**
 * Which carried groups the block index does not hold yet (1) — the pack's blocks. The CIDs go to
 * the server as one binary parameter of 36-byte slices, probed as one array (the index scan takes
 * them in order, and keys on one leaf page share a descent), and the answer is the CIDs found,
 * concatenated in CID order: few beside the new ones. A bytea[] would travel as hex text. An
 * EXISTS subquery per CID (a descent, an executor pass and an answer character each) read 17.6
 * buffers per live-sync commit against 2.2, and took about three times as long.
 */
async function freshAmong(tx: pg.ClientBase, groups: BlockGroups): Promise<Uint8Array> {
  const fresh = new Uint8Array(groups.count);
  let count = 0;
  for (let g = 0; g < groups.count; g++) count += groups.carried[g]!;
  const carried = new Int32Array(count);
  for (let g = 0, k = 0; g < groups.count; g++) if (groups.carried[g]) carried[k++] = g;
  const param = Buffer.allocUnsafe(Math.min(count, CHECK_BATCH) * CID_LENGTH);
  for (let at = 0; at < carried.length; at += CHECK_BATCH) {
    const batch = carried.subarray(at, at + CHECK_BATCH);
    for (let k = 0; k < batch.length; k++) groups.copyCid(batch[k]!, param, k * CID_LENGTH);
    const { rows } = await tx.query<{ held: Buffer | null }>({
      name: 'ingest-held-blocks',
      text: `SELECT string_agg(cid, ''::bytea ORDER BY cid) AS held FROM blocks
       WHERE cid = ANY (ARRAY(SELECT substring($1::bytea FROM i * ${CID_LENGTH} + 1 FOR ${CID_LENGTH}) FROM generate_series(0, $2::int - 1) AS i))`,
      values: [param.subarray(0, batch.length * CID_LENGTH), batch.length],
    });
    const held = rows[0]?.held ?? Buffer.alloc(0);
    // Both in CID byte order: one merge.
    let h = 0;
    for (let k = 0; k < batch.length; k++) {
      const matches = h < held.length && param.compare(held, h, h + CID_LENGTH, k * CID_LENGTH, (k + 1) * CID_LENGTH) === 0;
      if (matches) h += CID_LENGTH;
      else fresh[batch[k]!] = 1;
    }
    if (h !== held.length) throw new Error(`indexed-blocks check answered ${held.length / CID_LENGTH} CIDs that were not asked, or out of order`);
  }
  return fresh;
}

/**
 * The pack's row and its blocks' rows, each block inserted with its refcount. The batch checked
 * that none of them is indexed; one that a concurrent batch indexed since fails the COPY with a
 * unique violation (23505), and the batch is retried.
 */
async function indexNewBlocks(tx: pg.ClientBase, pack: LaidOutPack, inPack: Int32Array, groups: BlockGroups): Promise<void> {
  const { rows } = await tx.query<{ id: string }>({
    name: 'ingest-pack-row',
    text: `INSERT INTO packs (key, size_bytes, block_count) VALUES ($1, $2, $3)
     ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key RETURNING id`,
    values: [pack.key, pack.size, inPack.length],
  });
  const packId = Number(rows[0]!.id);
  // In CID order (the groups' order), the lock order, which also keeps B-tree inserts in order.
  await copyBinary(tx, 'blocks', ['cid', 'pack_id', 'byte_offset', 'byte_length', 'refcount'], function* (w) {
    for (let i = 0; i < inPack.length; i++) {
      const g = inPack[i]!;
      const refcount = groups.delta[g]!;
      if (refcount < 0) throw new Error(`a new block would start with refcount ${refcount}`);
      w.row(5);
      w.bytea(groups.cidAt(g));
      w.int8(packId);
      w.int8(pack.offsets[i]!);
      w.int4(pack.lengths[i]!);
      w.int8(refcount);
      yield;
    }
  });
}

/** Refcount changes to blocks indexed before this batch, in CID order (the lock order). */
async function updateRefcounts(tx: pg.ClientBase, groups: BlockGroups, fresh: Uint8Array): Promise<void> {
  const todo: number[] = [];
  for (let g = 0; g < groups.count; g++) if (!fresh[g] && groups.delta[g] !== 0) todo.push(g);
  for (let at = 0; at < todo.length; at += 20_000) {
    const batch = todo.slice(at, at + 20_000);
    const param = Buffer.allocUnsafe(batch.length * CID_LENGTH);
    batch.forEach((g, k) => groups.copyCid(g, param, k * CID_LENGTH));
    const res = await tx.query(
      `UPDATE blocks b SET refcount = b.refcount + t.d
       FROM (SELECT substring($1::bytea FROM i * ${CID_LENGTH} + 1 FOR ${CID_LENGTH}) AS c, ($2::bigint[])[i + 1] AS d
             FROM generate_series(0, $3::int - 1) AS i) AS t
       WHERE b.cid = t.c`,
      [param, batch.map((g) => groups.delta[g]!), batch.length],
    );
    if (res.rowCount !== batch.length) {
      throw new Error(`refcount update reached ${res.rowCount} of ${batch.length} blocks: a referenced block is not indexed`);
    }
  }
}

const utf8 = (s: string) => Buffer.from(s, 'utf8');
const CREATE = utf8('create');
const UPDATE = utf8('update');

/** Record `i`'s collection as UTF-8, encoded once per collection (a collection's records are consecutive). */
function collectionBytes(list: RecordList): (i: number) => Buffer {
  let last: string | undefined;
  let bytes = Buffer.alloc(0);
  return (i) => {
    const c = list.collectionAt(i);
    if (c !== last) {
      last = c;
      bytes = utf8(c);
    }
    return bytes;
  };
}

async function writeEvents(tx: pg.ClientBase, events: (PendingEvent | SnapshotPlan)[], origin: string, expires: Date | null): Promise<void> {
  if (events.length === 0) return;
  const columns = ['did', 'kind', 'collection', 'rkey', 'cid', 'prev_cid', 'rev', 'origin', 'expires_at', 'detail'];
  const originBytes = utf8(origin);
  await copyBinary(tx, 'events', columns, function* (w) {
    const one = (e: PendingEvent) => {
      w.row(10);
      w.text(e.did);
      w.text(e.kind);
      w.text(e.collection);
      w.text(e.rkey);
      w.bytea(e.cid);
      w.bytea(e.prev);
      w.text(e.rev);
      w.text(origin);
      w.timestamptz(e.kind === 'account' || e.kind === 'identity' ? null : expires);
      w.jsonb(e.detail);
    };
    for (const e of events) {
      if (e.kind !== 'plan') {
        one(e);
        yield;
        continue;
      }
      const { list, change, prev, stored } = e;
      // What every row of the plan repeats is encoded once.
      const did = utf8(e.did);
      const rev = utf8(e.rev);
      const collectionOf = collectionBytes(list);
      for (let i = 0; i < change.length; i++) {
        const c = change[i]!;
        if (c === 0) continue;
        w.row(10);
        w.textBytes(did);
        w.textBytes(c === 1 ? CREATE : UPDATE);
        w.textBytes(collectionOf(i));
        w.text(list.rkeyAt(i));
        w.bytea(list.cidBytesAt(i));
        if (c === 2) w.bytea(stored.cids, prev![i]! * CID_LENGTH, CID_LENGTH);
        else w.null();
        w.textBytes(rev);
        w.textBytes(originBytes);
        w.timestamptz(expires);
        w.null();
        yield;
      }
      for (const j of e.deleted) {
        const path = stored.paths[j]!;
        const slash = path.indexOf('/');
        w.row(10);
        w.textBytes(did);
        w.text('delete');
        w.text(path.slice(0, slash));
        w.text(path.slice(slash + 1));
        w.null();
        w.bytea(stored.cids, j * CID_LENGTH, CID_LENGTH);
        w.textBytes(rev);
        w.textBytes(originBytes);
        w.timestamptz(expires);
        w.null();
        yield;
      }
      for (const a of e.after) {
        one(a);
        yield;
      }
    }
  });
}

/**
 * Fills each view with the stored records the batch needs: all of them for a repo that gets a
 * full snapshot (the diff needs every path), only the touched paths for one that gets commits.
 */
async function loadRecords(tx: pg.ClientBase, changes: RepoChange[], views: Map<string, RepoView>): Promise<void> {
  const full = new Set<string>();
  const touched: { did: string[]; collection: string[]; rkey: string[] } = { did: [], collection: [], rkey: [] };
  for (const c of changes) {
    if (c.kind === 'snapshot') full.add(c.repo.did);
  }
  for (const c of changes) {
    if (c.kind !== 'commit' || full.has(c.did)) continue;
    for (const op of c.ops) {
      touched.did.push(c.did);
      touched.collection.push(op.collection);
      touched.rkey.push(op.rkey);
      const view = views.get(c.did)!;
      const path = `${op.collection}/${op.rkey}`;
      if (!view.records.has(path)) view.records.set(path, { collection: op.collection, rkey: op.rkey, orig: null, cur: null });
    }
  }
  const fill = (rows: { did: string; collection: string; rkey: string; cid: Buffer }[]) => {
    for (const r of rows) views.get(r.did)!.records.set(`${r.collection}/${r.rkey}`, { collection: r.collection, rkey: r.rkey, orig: r.cid, cur: r.cid });
  };
  if (full.size > 0) {
    const { rows } = await tx.query('SELECT did, collection, rkey, cid FROM records WHERE did = ANY($1::text[])', [[...full]]);
    fill(rows);
    for (const d of full) views.get(d)!.full = true;
  }
  if (touched.did.length > 0) {
    const { rows } = await tx.query(
      `SELECT r.did, r.collection, r.rkey, r.cid FROM records r
       JOIN unnest($1::text[], $2::text[], $3::text[]) AS t(d, c, k) ON r.did = t.d AND r.collection = t.c AND r.rkey = t.k`,
      [touched.did, touched.collection, touched.rkey],
    );
    fill(rows);
  }
}

interface RecordRow {
  did: string;
  collection: string;
  rkey: string;
  orig: Buffer | null;
  cur: Buffer | null;
}

function recordWrites(views: Map<string, RepoView>): { inserts: RecordRow[]; updates: RecordRow[]; deletes: RecordRow[] } {
  const out = { inserts: [] as RecordRow[], updates: [] as RecordRow[], deletes: [] as RecordRow[] };
  for (const v of views.values()) {
    for (const s of v.records.values()) {
      if (s.orig === null && s.cur === null) continue;
      const row = { did: v.did, collection: s.collection, rkey: s.rkey, orig: s.orig, cur: s.cur };
      if (s.orig === null) out.inserts.push(row);
      else if (s.cur === null) out.deletes.push(row);
      else if (!s.orig.equals(s.cur)) out.updates.push(row);
    }
  }
  return out;
}

async function writeRecords(tx: pg.ClientBase, rows: ReturnType<typeof recordWrites>, plans: SnapshotPlan[], views: Map<string, RepoView>): Promise<void> {
  // The plans' updates and deletes join the view's as rows: they are few beside the creates.
  for (const p of plans) {
    if (p.eventsOnly) continue;
    const split = (path: string) => [path.slice(0, path.indexOf('/')), path.slice(path.indexOf('/') + 1)] as const;
    for (const j of p.deleted) {
      const [collection, rkey] = split(p.stored.paths[j]!);
      rows.deletes.push({ did: p.did, collection, rkey, orig: null, cur: null });
    }
    for (let i = 0; i < p.change.length; i++) {
      if (p.change[i] === 2) rows.updates.push({ did: p.did, collection: p.list.collectionAt(i), rkey: p.list.rkeyAt(i), orig: null, cur: Buffer.from(p.list.cidBytesAt(i)) });
    }
  }
  const CHUNK = 20_000;
  for (let i = 0; i < rows.deletes.length; i += CHUNK) {
    const b = rows.deletes.slice(i, i + CHUNK);
    await tx.query(
      `DELETE FROM records r USING unnest($1::text[], $2::text[], $3::text[]) AS t(d, c, k)
       WHERE r.did = t.d AND r.collection = t.c AND r.rkey = t.k`,
      [b.map((r) => r.did), b.map((r) => r.collection), b.map((r) => r.rkey)],
    );
  }
  // Inserts are paths the locked repos do not hold, so COPY cannot conflict.
  await copyBinary(tx, 'records', ['did', 'collection', 'rkey', 'cid'], function* (w) {
    for (const r of rows.inserts) {
      w.row(4);
      w.text(r.did);
      w.text(r.collection);
      w.text(r.rkey);
      w.bytea(r.cur);
      yield;
    }
    for (const p of plans) {
      if (p.eventsOnly) continue;
      const { list, change } = p;
      const did = utf8(p.did);
      const collectionOf = collectionBytes(list);
      for (let i = 0; i < change.length; i++) {
        if (change[i] !== 1) continue;
        w.row(4);
        w.textBytes(did);
        w.textBytes(collectionOf(i));
        w.text(list.rkeyAt(i));
        w.bytea(list.cidBytesAt(i));
        yield;
      }
    }
  });
  for (let i = 0; i < rows.updates.length; i += CHUNK) {
    const b = rows.updates.slice(i, i + CHUNK);
    await tx.query(
      `UPDATE records r SET cid = t.v FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) AS t(d, c, k, v)
       WHERE r.did = t.d AND r.collection = t.c AND r.rkey = t.k`,
      [b.map((r) => r.did), b.map((r) => r.collection), b.map((r) => r.rkey), b.map((r) => r.cur)],
    );
  }
  // Repos that got a full snapshot or were wiped are counted again (or replaced by the counts a
  // compact snapshot knows); the others move by deltas.
  const recount = [...views.values()].filter((v) => v.recount).map((v) => v.did);
  if (recount.length > 0) {
    await tx.query('DELETE FROM collection_counts WHERE did = ANY($1::text[])', [recount]);
    await tx.query(
      `INSERT INTO collection_counts (did, collection, count)
       SELECT did, collection, count(*) FROM records WHERE did = ANY($1::text[]) GROUP BY did, collection`,
      [recount],
    );
  }
  const known = [...views.values()].filter((v) => !v.recount && v.counts);
  if (known.length > 0) {
    const cols = { did: [] as string[], collection: [] as string[], count: [] as number[] };
    for (const v of known) {
      for (const [collection, count] of v.counts!) {
        cols.did.push(v.did);
        cols.collection.push(collection);
        cols.count.push(count);
      }
    }
    // One statement: the repos' counts become these (collections they no longer have go). NOT IN
    // over the batch's pairs is one hash of them; a NOT EXISTS would be a nested loop over them
    // per stored row, hash joins being off (KEYED_PLANS).
    await tx.query({
      name: 'ingest-counts',
      text: `WITH t AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) AS t(did, collection, count)),
            gone AS (DELETE FROM collection_counts c WHERE c.did = ANY($4::text[])
                     AND (c.did, c.collection) NOT IN (SELECT t.did, t.collection FROM t))
       INSERT INTO collection_counts (did, collection, count) SELECT did, collection, count FROM t
       ON CONFLICT (did, collection) DO UPDATE SET count = EXCLUDED.count`,
      values: [cols.did, cols.collection, cols.count, known.map((v) => v.did)],
    });
  }
  const delta = new Map<string, { did: string; collection: string; d: number }>();
  const bump = (r: RecordRow, d: number) => {
    const v = views.get(r.did)!;
    if (v.recount || v.counts) return;
    const k = `${r.did} ${r.collection}`;
    const e = delta.get(k) ?? { did: r.did, collection: r.collection, d: 0 };
    e.d += d;
    delta.set(k, e);
  };
  for (const r of rows.inserts) bump(r, 1);
  for (const r of rows.deletes) bump(r, -1);
  const moved = [...delta.values()].filter((e) => e.d !== 0);
  // Counts that grow (every count of a batch of creates) are added in one upsert, which makes
  // the rows of a collection's first records; an update then a NOT EXISTS insert probed each key
  // twice. An upsert cannot take the others: the CHECK (count >= 0) is checked on the row it
  // would insert before it finds the conflict. They are adjusted, and the rows that reach zero
  // dropped, as a recount would.
  const gains = moved.filter((e) => e.d > 0);
  const losses = moved.filter((e) => e.d < 0);
  if (gains.length > 0) {
    await tx.query({
      name: 'ingest-count-gains',
      text: `INSERT INTO collection_counts (did, collection, count)
       SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
       ON CONFLICT (did, collection) DO UPDATE SET count = collection_counts.count + EXCLUDED.count`,
      values: [gains.map((e) => e.did), gains.map((e) => e.collection), gains.map((e) => e.d)],
    });
  }
  if (losses.length > 0) {
    await tx.query(
      `UPDATE collection_counts c SET count = c.count + t.d FROM unnest($1::text[], $2::text[], $3::bigint[]) AS t(did, col, d)
       WHERE c.did = t.did AND c.collection = t.col`,
      [losses.map((e) => e.did), losses.map((e) => e.collection), losses.map((e) => e.d)],
    );
    await tx.query(`DELETE FROM collection_counts WHERE did = ANY($1::text[]) AND count = 0`, [[...new Set(losses.map((e) => e.did))]]);
  }
}

/** The batch's repo states as rows `t`, from the parameters {@link repoStateValues} gives. */
const REPO_STATE_ROWS = `unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::bytea[], $7::text[], $8::text[], $9::text[],
                 $10::bigint[], $11::bigint[], $12::bool[], $13::bool[], $14::text[], $15::timestamptz[])
       AS t(did, status, gone, rev, head, data, pds, handle, key, rc, bc, clr, imp, err, recheck)`;

/** The parameters of {@link REPO_STATE_ROWS}: one array per column, a repo per element. */
function repoStateValues(views: RepoView[], goneRecheckSeconds: number | undefined): unknown[] {
  const col = <T>(f: (v: RepoView) => T) => views.map(f);
  const recheckAt = goneRecheckSeconds === undefined ? null : new Date(Date.now() + goneRecheckSeconds * 1000);
  return [
    col((v) => v.did), col((v) => v.status), col((v) => v.goneStatus), col((v) => v.rev), col((v) => v.head), col((v) => v.data),
    col((v) => v.pds), col((v) => v.handle), col((v) => v.signingKey), col((v) => v.recordsCount), col((v) => v.blocksCount),
    col((v) => v.clearResync), col((v) => v.imported), col((v) => v.lastError?.slice(0, 2000) ?? null),
    col((v) => (v.status === 'gone' ? recheckAt : null)),
  ];
}

/** The row `INSERT INTO repos (did)` makes: what a repo the mirror does not hold yet is decided against. */
function newRepoRow(did: string): StoredRow {
  return { did, status: 'pending', gone_status: null, rev: null, head_cid: null, data_cid: null, pds: null, handle: null, signing_key: null, records_count: '0', blocks_count: '0', last_error: null };
}

/**
 * The rows of the batch's new repos, with the state the batch left them in (a repo whose changes
 * changed nothing gets the new row's defaults), in DID order. A row that a concurrent transaction
 * inserted since the batch looked fails this with a unique violation (23505): the batch is retried.
 */
async function insertRepos(tx: pg.ClientBase, views: RepoView[], goneRecheckSeconds: number | undefined): Promise<void> {
  if (views.length === 0) return;
  await tx.query({
    name: 'ingest-insert-repos',
    text: `INSERT INTO repos (did, status, gone_status, rev, head_cid, data_cid, pds, handle, signing_key, records_count, blocks_count,
       next_retry_at, last_error, last_imported_at)
     SELECT t.did, t.status, t.gone, t.rev, t.head, t.data, t.pds, t.handle, t.key, t.rc, t.bc,
       CASE WHEN t.clr THEN t.recheck END, CASE WHEN t.clr THEN t.err END, CASE WHEN t.imp THEN now() END
     FROM ${REPO_STATE_ROWS}
     ORDER BY t.did`,
    values: repoStateValues(views, goneRecheckSeconds),
  });
}

async function writeRepoState(tx: pg.ClientBase, views: RepoView[], goneRecheckSeconds: number | undefined): Promise<void> {
  if (views.length === 0) return;
  await tx.query({
    name: 'ingest-repo-state',
    text: `UPDATE repos r SET status = t.status, gone_status = t.gone, rev = t.rev, head_cid = t.head, data_cid = t.data,
       pds = t.pds, handle = t.handle, signing_key = t.key, records_count = t.rc, blocks_count = t.bc,
       resync_kind = CASE WHEN t.clr THEN NULL ELSE r.resync_kind END,
       resync_count = CASE WHEN t.clr THEN 0 ELSE r.resync_count END,
       next_retry_at = CASE WHEN t.clr THEN t.recheck ELSE r.next_retry_at END,
       last_error = CASE WHEN t.clr THEN t.err ELSE r.last_error END,
       last_imported_at = CASE WHEN t.imp THEN now() ELSE r.last_imported_at END,
       updated_at = now()
     FROM ${REPO_STATE_ROWS}
     WHERE r.did = t.did`,
    values: repoStateValues(views, goneRecheckSeconds),
  });
}
