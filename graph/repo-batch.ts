/**
 * Reading Repo nodes a batch of roots at a time. A Repo step needs the repos row and, as the walk
 * asks, the record index, the event log, the collection counts, the block index of the packs
 * that hold most of the repo's blocks and the refcount comparison of those packs. Read per repo,
 * that is a transaction of nine round trips, and the refcount comparison scanned `records` and
 * `events` once per repo before they had an index on `cid` (migration 0005): on a mirror of many
 * small repos the walk spent nearly all its time there, and the cost of a repo grew with the size
 * of the mirror.
 *
 * Here the first Repo step of a run of roots reads the next roots with it — up to `maxRepos`
 * repos, and no more than `maxRecords` records among them (one larger repo is a batch of its
 * own) — in one read-only REPEATABLE READ transaction of a few `= ANY` statements: a repo is
 * still read in one snapshot (the batch's), and the comparison is one statement per batch.
 * Roots wait in memory only until their step takes them.
 *
 * Batches are large because PostgreSQL's cost per repo falls with them: the refcount
 * comparison joins the batch's blocks with `records` and `events`, and a batch of many repos
 * shares one pass over them (13 repos of 5,000 records:
 * 9.4 µs of PostgreSQL CPU per walked node a repo at a time, 3.3 in one batch). So that the walk
 * does not wait on them, the next batch is read while the walk takes the last one (one ahead),
 * and the first batches ramp up to the full size — a quarter of it, a half — so that the walk
 * starts early and each batch is read while the one before it, half its size, is walked. (With a
 * quarter, then the full size, the walk of the first batch was over long before the second was
 * read: 13 repos of 5,000 records walked 2, then waited on the read of 10. Starting from an
 * eighth made more batches, each a pass over `records` and `events` once a batch is a quarter
 * of the mirror: more PostgreSQL CPU for a shorter wait.)
 */
import type pg from 'pg';
import { refcountMismatchesInPacks } from '../storage/validate-queries.ts';
import { cidMapKey, keyWord } from './blocks.ts';
import { LocationTable } from './locations.ts';
import type { BlockLoc, Node } from './nodes.ts';
import { EVENT_SQL, LOC_SQL, PackedEvents, PackedRecords, RECORD_SQL, fromWire, onWire, packLocs, readLocsInto } from './packed.ts';
import type { PackRow, RefcountScan, RepoRow, StepData } from './steps/context.ts';

/** What the walk reads for each repo. */
export interface RepoWants {
  records: boolean;
  events: boolean;
  counts: boolean;
  locations: boolean;
  refcounts: boolean;
}

export interface RepoBatchOptions {
  /** Most repos read together. Default 1,024 (reading ahead, the first batches a quarter of it, a half). */
  maxRepos?: number;
  /** Most records (by `records_count`) among the repos read together, past the first. Default 50,000 (ramped up as `maxRepos` is). */
  maxRecords?: number;
  /** Read the next batch while the walk takes the last one. Default true. */
  readAhead?: boolean;
  /**
   * A pack's index is read in bulk when the repo's records in it are at least this share of the
   * pack's bytes; a pack that holds one of the repo's records among a million others' is not. A
   * head's pack, when the batch's repos whose heads it holds are at least this share of its
   * blocks (estimated from their record counts). Default 1/8.
   */
  prefetchShare?: number;
  /**
   * How a batch is read: `scan` by passes over whole tables (hash joins), `lookup` by index
   * lookups per repo and per block, `auto` (the default) by scans when the batch holds an eighth
   * of the mirror's records or more. For measuring the two side by side; both give the same data.
   */
  plan?: 'auto' | 'scan' | 'lookup';
}

/** Locations of some of a repo's record blocks in one pack not read in bulk (a `LOC_SQL` aggregate). */
interface StrayLocs {
  pack: { id: number; key: string | null; size: number };
  packed: Buffer;
}

interface Batch {
  repos: Map<string, { data: StepData['Repo']; packs: number[]; strays: StrayLocs[] }>;
  /** The block index of every pack the batch read in bulk, which each of its repos' roots shares. */
  locations: LocationTable | undefined;
  /** Where in the walk order the next batch starts: past the last repo this one holds. */
  next: number;
}

export class RepoBatches {
  readonly #pool: pg.Pool;
  readonly #wants: RepoWants;
  readonly #maxRepos: number;
  readonly #maxRecords: number;
  readonly #prefetchShare: number;
  /** The Repo roots in walk order, and where each DID first appears. */
  readonly #dids: string[];
  readonly #at = new Map<string, number>();
  /** DIDs being read or read and not yet taken, with the batch that reads them. */
  readonly #pending = new Map<string, Promise<Batch>>();
  readonly #knownPacks: Map<string, PackRow>;
  readonly #readAhead: boolean;
  readonly #plan: 'auto' | 'scan' | 'lookup';
  /** Batches being read, or read with repos not yet taken: at most two are read ahead. */
  #open = 0;
  /** Where in `#dids` the next batch read ahead starts. */
  #next = 0;
  #batches = 0;

  /** `knownPacks` receives the rows of the packs whose block index a batch reads. */
  constructor(pool: pg.Pool, roots: readonly Node[], skip: ReadonlySet<number> | undefined, wants: RepoWants, knownPacks: Map<string, PackRow>, opts: RepoBatchOptions = {}) {
    this.#pool = pool;
    this.#knownPacks = knownPacks;
    this.#wants = wants;
    this.#maxRepos = Math.max(1, opts.maxRepos ?? 1024);
    this.#maxRecords = opts.maxRecords ?? 50_000;
    this.#readAhead = opts.readAhead ?? true;
    this.#prefetchShare = opts.prefetchShare ?? 1 / 8;
    this.#plan = opts.plan ?? 'auto';
    this.#dids = roots.flatMap((r, i) => (r.type === 'Repo' && !skip?.has(i) ? [r.did] : []));
    for (const [i, did] of this.#dids.entries()) if (!this.#at.has(did)) this.#at.set(did, i);
  }

  /**
   * The Repo step's data of `did`, with the block index of its packs added to `locations`.
   * Reads the batch that starts at `did` unless one in flight holds it.
   */
  async read(did: string, locations: LocationTable): Promise<StepData['Repo']> {
    for (;;) {
      const pending = this.#pending.get(did) ?? this.#start(did);
      const batch = await pending;
      const repo = batch.repos.get(did);
      // Cut from its batch by the record budget: it starts the next one.
      if (!repo) continue;
      batch.repos.delete(did);
      if (this.#pending.get(did) === pending) this.#pending.delete(did);
      if (batch.repos.size === 0) {
        this.#open--;
        this.#ahead();
      }
      // The packs read in bulk are shared, not copied (see LocationTable.share); the stray
      // records' locations, read for this repo alone, are its own.
      if (repo.packs.length > 0 && batch.locations) locations.share(batch.locations);
      for (const stray of repo.strays) readLocsInto(stray.packed, locations, stray.pack);
      return repo.data;
    }
  }

  #start(did: string): Promise<Batch> {
    // Reading ahead, the first batches are smaller (see the module comment): 1/4, 1/2, 1.
    const scale = this.#readAhead ? 2 ** Math.min(0, this.#batches++ - 2) : 1;
    const maxRepos = Math.max(1, Math.floor(this.#maxRepos * scale));
    const maxRecords = this.#maxRecords * scale;
    const candidates = [did];
    const from = this.#at.get(did);
    const positions = [from ?? -1];
    if (from !== undefined) {
      for (let i = from + 1; i < this.#dids.length && candidates.length < maxRepos; i++) {
        const d = this.#dids[i]!;
        if (!this.#pending.has(d) && d !== did) {
          candidates.push(d);
          positions.push(i);
        }
      }
    }
    this.#open++;
    const batch = this.#load(candidates, positions, maxRecords);
    for (const d of candidates) this.#pending.set(d, batch);
    // A DID the budget cut (or whose batch failed) leaves `pending`: its read starts the next
    // batch. The others stay until their step takes them.
    const drop = (keep: (d: string) => boolean) => {
      for (const d of candidates) if (this.#pending.get(d) === batch && !keep(d)) this.#pending.delete(d);
    };
    batch.then(
      (b) => {
        drop((d) => b.repos.has(d));
        if (b.repos.size === 0) this.#open--;
        this.#next = Math.max(this.#next, b.next);
        this.#ahead();
      },
      () => {
        drop(() => false);
        this.#open--;
      },
    );
    return batch;
  }

  /** Starts reading the next batch in walk order while fewer than two are open. */
  #ahead(): void {
    if (!this.#readAhead) return;
    if (this.#open >= 2 || this.#next >= this.#dids.length) return;
    const did = this.#dids[this.#next]!;
    // In a batch being read, which may yet cut it: that batch's end says where the next starts.
    if (this.#pending.has(did)) return;
    this.#next++;
    this.#start(did).catch(() => {});
  }

  async #load(candidates: string[], positions: number[], maxRecords: number): Promise<Batch> {
    const client = await this.#pool.connect();
    try {
      await client.query(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; ${SERIAL_PLANS}`);
      const batch = await this.#read(client, candidates, positions, maxRecords);
      await client.query('COMMIT');
      return batch;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  async #read(db: pg.ClientBase, candidates: string[], positions: number[], maxRecords: number): Promise<Batch> {
    const wants = this.#wants;
    const rows = await readRepoRows(db, candidates);
    // Candidates in walk order while their records fit the budget; the first always.
    const dids: string[] = [];
    let records = 0;
    for (const did of candidates) {
      const n = rows.get(did)?.row.recordsCount ?? 0;
      if (dids.length > 0 && records + n > maxRecords) break;
      dids.push(did);
      records += n;
    }
    // A batch that is a large share of the mirror (an eighth of its records or more) is read
    // best by passes over whole tables (hash joins); a small one, by index lookups per repo and
    // per block, whose cost is the batch's, not the mirror's: left to its estimates, PostgreSQL
    // read `records`, `events`, `collection_counts` and `blocks` whole while a batch was a tenth
    // of the mirror (10,000 repos of 10 records), so a node's cost grew with the mirror (issue
    // 13); and lookups for a batch that is the whole mirror (13 repos of 5,000 records) cost
    // PostgreSQL 4.7-6.2 µs a node against 3.2-4.2.
    // This switch is the growth bench's step in PostgreSQL CPU between 1,000 and 10,000 repos of
    // 10 records (6.29 → 8.66 µs a node, then 8.86 at 100,000): at 1,000 a batch is half the
    // mirror and is scanned; from 10,000 it is looked up, at a cost per node that no longer grows.
    // Forced either way (`plan`, `growth-mirror --repo-read`), on a loaded machine: 1,000 repos,
    // scans 5.7-7.1 µs a node, lookups 6.6-10.6; 10,000 repos, lookups 10.1, scans 10.8.
    const ofMirror = this.#plan === 'auto' ? await mirrorShare(db, records) : this.#plan === 'scan' ? 1 / 8 : 0;
    const large = ofMirror >= 1 / 8;
    if (!large) await db.query('SET LOCAL enable_seqscan = off');
    const next = positions[dids.length - 1]! + 1;
    const present = dids.filter((d) => rows.has(d));
    if (wants.refcounts) await countHeadRefs(db, present.map((d) => rows.get(d)!));
    const indexOf = new Map<string, { collection: string; packed: Buffer }[]>();
    const eventsOf = new Map<string, PackedEvents>();
    const countsOf = new Map<string, Map<string, number>>();
    // The record index is read for the locations too: it says which blocks are the repo's records.
    if ((wants.records || wants.locations) && present.length) {
      const res = await db.query<{ did: string; collection: string; packed: string }>(
        `SELECT r.did, r.collection, ${onWire(`string_agg(${RECORD_SQL}, ''::bytea ORDER BY r.rkey)`)} AS packed
         FROM records r WHERE r.did = ANY($1::text[]) GROUP BY r.did, r.collection ORDER BY r.did, r.collection`,
        [present],
      );
      for (const g of res.rows) {
        let list = indexOf.get(g.did);
        if (!list) indexOf.set(g.did, (list = []));
        list.push({ collection: g.collection, packed: fromWire(g.packed) });
      }
    }
    if (wants.events && present.length) {
      const res = await db.query<{ did: string; packed: string }>(
        `SELECT e.did, ${onWire(`string_agg(${EVENT_SQL}, ''::bytea ORDER BY e.id)`)} AS packed FROM events e WHERE e.did = ANY($1::text[]) GROUP BY e.did`,
        [present],
      );
      for (const g of res.rows) eventsOf.set(g.did, new PackedEvents(fromWire(g.packed)));
    }
    if (wants.counts && present.length) {
      const res = await db.query<{ did: string; collection: string; count: string }>('SELECT did, collection, count FROM collection_counts WHERE did = ANY($1::text[])', [present]);
      for (const x of res.rows) {
        let m = countsOf.get(x.did);
        if (!m) countsOf.set(x.did, (m = new Map()));
        m.set(x.collection, Number(x.count));
      }
    }

    const packsOf = new Map<string, number[]>();
    let locations: LocationTable | undefined;
    const straysOf = new Map<string, StrayLocs[]>();
    const strayKeysOf = new Map<string, Set<string>>();
    let mismatches: RefcountScan['mismatches'] | null = null;
    if (wants.locations && present.length) {
      // The packs each repo's records sit in, read in bulk when the repo's records there are a
      // share of the pack (`prefetchShare`), and the head's pack, always. The head packs are read
      // first: a repo's records are nearly all in its head's pack (the pack of the import that
      // stored them), found there in memory; only the others are looked up, by their CIDs. (A
      // join of every record with `blocks` to sum each repo's bytes by pack was the batch's
      // dearest statement: 2,000 repos of 10 records, 30 % of the batches' statement time.)
      const strayCids: Buffer[] = [];
      const all = new Set<number>();
      const table = (locations = new LocationTable());
      const readPacks = async (ids: number[]) => {
        if (ids.length === 0) return;
        const res = await db.query<{ pack_id: string; key: string | null; size_bytes: string | null; block_count: number | null; created_at: Date | null; packed: string }>(
          `SELECT b.pack_id, p.key, p.size_bytes, p.block_count, p.created_at, ${onWire(`string_agg(${LOC_SQL}, ''::bytea)`)} AS packed
           FROM blocks b LEFT JOIN packs p ON p.id = b.pack_id
           WHERE b.pack_id = ANY($1::bigint[]) GROUP BY b.pack_id, p.key, p.size_bytes, p.block_count, p.created_at`,
          [ids],
        );
        // The walk soon steps these packs' Pack nodes: their rows come along (a bounded cache).
        if (this.#knownPacks.size > 50_000) this.#knownPacks.clear();
        for (const g of res.rows) {
          const id = Number(g.pack_id);
          readLocsInto(fromWire(g.packed), table, { id, key: g.key, size: Number(g.size_bytes ?? 0) });
          if (g.key !== null) this.#knownPacks.set(g.key, { id, key: g.key, sizeBytes: Number(g.size_bytes), blockCount: g.block_count!, createdAt: g.created_at! });
        }
        for (const id of ids) all.add(id);
      };
      // A head's pack is read whole when the batch's repos whose heads it holds can be a share of
      // it (`prefetchShare`, by blocks: a repo is about 1.3 blocks a record, and its commit and MST
      // root): the pack of a backfill holds them, or most of them. A pack that live sync filled
      // with the commits of a few thousand repos holds one or a few of the batch's heads among
      // tens of thousands of blocks: read whole, a batch of 1,024 repos updated at different times
      // would read a thousand such packs, every block of them. Such a repo's head is where
      // `headLoc` says, its records are located by their CIDs like any outside a pack read whole,
      // and its MST nodes are looked up as the walk reaches them. A pack without a `packs` row
      // (no block count) is read whole, as before.
      const ours = new Map<number, number>();
      for (const did of present) {
        const r = rows.get(did)!;
        if (r.headLoc) ours.set(r.headLoc.packId, (ours.get(r.headLoc.packId) ?? 0) + r.row.recordsCount * 1.3 + 2);
      }
      const headOf = new Map(
        present.map((did) => {
          const { headLoc, headPackBlocks } = rows.get(did)!;
          const whole = headLoc && (headPackBlocks === null || ours.get(headLoc.packId)! >= headPackBlocks * this.#prefetchShare);
          return [did, whole ? headLoc.packId : -1] as const;
        }),
      );
      const headPack = (did: string) => headOf.get(did)!;
      await readPacks([...new Set(present.map(headPack).filter((id) => id >= 0))]);

      // Each repo's records outside its head's pack: where the packs read say, or looked up.
      const outside = new Map<string, Buffer[]>();
      const unknown: Buffer[] = [];
      const asked = new Set<string>();
      for (const did of present) {
        const head = headPack(did);
        let list: Buffer[] | undefined;
        for (const g of indexOf.get(did) ?? []) {
          // The rows of `RECORD_SQL`: rkey, then the CID (see packed.ts), read in place.
          const buf = g.packed;
          for (let pos = 0; pos < buf.length; ) {
            pos += 4 + Math.max(0, buf.readInt32BE(pos));
            const n = buf.readInt32BE(pos);
            const at = pos + 4;
            pos = at + Math.max(0, n);
            if (n !== 36) continue;
            const pack = table.packOf(buf, at);
            if (pack === head && head >= 0) continue;
            const cid = buf.subarray(at, at + 36);
            (list ??= []).push(cid);
            if (pack < 0) {
              const key = cidMapKey(cid);
              if (!asked.has(key)) {
                asked.add(key);
                unknown.push(cid);
              }
            }
          }
        }
        if (list) outside.set(did, list);
      }
      const looked = new LocationTable();
      if (unknown.length > 0) {
        // One bytea of concatenated CIDs, split in SQL (see storage/validate-queries.ts).
        const res = await db.query<{ pack_id: string; key: string | null; size_bytes: string | null; packed: string }>(
          `SELECT b.pack_id, p.key, p.size_bytes, ${onWire(`string_agg(${LOC_SQL}, ''::bytea)`)} AS packed
           FROM generate_series(1, $2::int) AS i JOIN blocks b ON b.cid = substring($1::bytea FROM (i - 1) * 36 + 1 FOR 36)
           LEFT JOIN packs p ON p.id = b.pack_id GROUP BY b.pack_id, p.key, p.size_bytes`,
          [Buffer.concat(unknown), unknown.length],
        );
        for (const g of res.rows) readLocsInto(fromWire(g.packed), looked, { id: Number(g.pack_id), key: g.key, size: g.size_bytes === null ? -1 : Number(g.size_bytes) });
      }
      // Per repo and pack: the bytes of its records there; read whole past the share, else the
      // records' locations alone (strays: a record another repo stored first; a small repo's
      // share of a pack many repos filled).
      const more = new Set<number>();
      const strayRecords = new Map<string, Map<number, { cids: Uint8Array[]; locs: BlockLoc[] }>>();
      for (const did of present) {
        const set = new Set<number>();
        const head = headPack(did);
        if (head >= 0) set.add(head);
        const byPack = new Map<number, { bytes: number; size: number; cids: Uint8Array[]; locs: BlockLoc[] }>();
        for (const cid of outside.get(did) ?? []) {
          const loc = table.get(cid) ?? looked.get(cid);
          if (!loc) continue;
          let p = byPack.get(loc.packId);
          if (!p) byPack.set(loc.packId, (p = { bytes: 0, size: loc.packSize, cids: [], locs: [] }));
          p.bytes += loc.length;
          p.cids.push(cid);
          p.locs.push(loc);
        }
        for (const [id, p] of byPack) {
          // A pack without its packs row (size −1 here) is never read whole.
          if (p.size >= 0 && p.bytes >= p.size * this.#prefetchShare) {
            set.add(id);
            if (!all.has(id)) more.add(id);
          } else {
            let m = strayRecords.get(did);
            if (!m) strayRecords.set(did, (m = new Map()));
            m.set(id, p);
          }
        }
        packsOf.set(did, [...set]);
      }
      await readPacks([...more]);
      const seen = new Set<string>();
      for (const [did, m] of strayRecords) {
        const list: StrayLocs[] = [];
        const keys = new Set<string>();
        for (const [id, { cids, locs }] of m) {
          const l0 = locs[0]!;
          list.push({ pack: { id, key: l0.packKey, size: Math.max(0, l0.packSize) }, packed: packLocs(cids, locs) });
          for (const cid of cids) {
            const key = cidMapKey(cid);
            keys.add(key);
            if (!seen.has(key)) {
              seen.add(key);
              strayCids.push(Buffer.from(cid));
            }
          }
        }
        straysOf.set(did, list);
        strayKeysOf.set(did, keys);
      }
      if (all.size > 0 || strayCids.length > 0) {
        if (wants.refcounts) {
          // A quarter of the mirror or more: its references counted whole, then joined (see `RefcountPlan`).
          const plan = ofMirror >= 1 / 4 ? 'aggregate' : large ? 'join' : 'lookup';
          mismatches = new Map((await refcountMismatchesInPacks(db, [...all], strayCids, present, { plan })).map((m) => [cidMapKey(m.cid), { refcount: m.refcount, refs: m.refs }]));
        }
      }
    }

    const repos: Batch['repos'] = new Map();
    let mismatchWords: Set<number> | undefined;
    for (const did of dids) {
      const r = rows.get(did);
      if (!r) {
        repos.set(did, { data: { row: null, recordRows: null, events: null, collectionCounts: null, headLoc: null, refcounts: null }, packs: [], strays: [] });
        continue;
      }
      const repoPacks = packsOf.get(did) ?? [];
      const strayKeys = strayKeysOf.get(did) ?? new Set<string>();
      const recordRows = wants.records ? new PackedRecords(indexOf.get(did) ?? []) : null;
      repos.set(did, {
        data: {
          row: r.row,
          recordRows,
          events: wants.events ? (eventsOf.get(did) ?? new PackedEvents(Buffer.alloc(0))) : null,
          collectionCounts: wants.counts ? (countsOf.get(did) ?? new Map()) : null,
          headLoc: r.headLoc,
          refcounts:
            mismatches && (repoPacks.length > 0 || strayKeys.size > 0)
              ? { packs: new Set(repoPacks), blocks: strayKeys, mismatches, blockWords: wordsOf(strayKeys), mismatchWords: (mismatchWords ??= wordsOf(mismatches.keys())) }
              : null,
        },
        packs: repoPacks,
        strays: straysOf.get(did) ?? [],
      });
    }
    return { repos, locations, next };
  }
}

/**
 * A batch's statements run without parallel workers. The walk reads a batch while it walks the
 * one before (read-ahead), so a batch's read is throughput, not latency: workers add the cost of
 * partial aggregates, their tuple queues and their start, and take the cores the walk runs on.
 * With PostgreSQL's default of two workers a gather, the refcount comparison of a batch that is
 * a large share of the mirror (its hash aggregate of `records` and `events`) ran in three
 * processes and cost about a third more CPU (issue 13: 13 repos × 5,000 records, five
 * alternating pairs of the walk bench, PostgreSQL 4.31 µs of CPU a walked node median against
 * 3.01 serial).
 */
const SERIAL_PLANS = 'SET LOCAL max_parallel_workers_per_gather = 0';

const wordsOf = (keys: Iterable<string>): Set<number> => {
  const out = new Set<number>();
  for (const k of keys) out.add(keyWord(k));
  return out;
};

/**
 * Sets each indexed head's references as `BlockLoc.refs` counts them: its record index rows and
 * events (none, in a healthy mirror) and its own repo's head. Other repos' heads are left to the
 * refcount check's mirror-wide count, as counting them here would read `repos` whole. Asked for
 * the repos the batch's budget kept, not every candidate read: the others are read again with
 * the next batch.
 */
async function countHeadRefs(db: pg.ClientBase, repos: { row: RepoRow; headLoc: BlockLoc | null }[]): Promise<void> {
  const heads = repos.filter((r) => r.headLoc && r.row.headCid);
  if (heads.length === 0) return;
  const { rows } = await db.query<{ i: number; n: string }>(
    `SELECT h.i, (SELECT count(*) FROM records x WHERE x.cid = h.cid) + (SELECT count(*) FROM events x WHERE x.cid = h.cid) AS n
     FROM unnest($1::bytea[]) WITH ORDINALITY AS h(cid, i)`,
    [heads.map((r) => r.row.headCid)],
  );
  // Its rows, and this repo's head.
  for (const r of rows) heads[Number(r.i) - 1]!.headLoc!.refs = Number(r.n) + 1;
}

/** The repos rows of `dids` that exist, with where each head commit is. */
async function readRepoRows(db: pg.ClientBase, dids: string[]): Promise<Map<string, { row: RepoRow; headLoc: BlockLoc | null; headPackBlocks: number | null }>> {
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
    head_blocks: number | null;
  }>(
    `SELECT r.did, r.status, r.gone_status, r.rev, r.head_cid, r.data_cid, r.signing_key, r.records_count,
       b.pack_id AS head_pack, p.key AS head_key, p.size_bytes AS head_size, b.byte_offset AS head_offset,
       b.byte_length AS head_length, b.refcount AS head_refcount, p.block_count AS head_blocks
     FROM repos r LEFT JOIN blocks b ON b.cid = r.head_cid LEFT JOIN packs p ON p.id = b.pack_id
     WHERE r.did = ANY($1::text[])`,
    [dids],
  );
  return new Map(
    rows.map((r) => [
      r.did,
      {
        row: {
          did: r.did,
          status: r.status,
          goneStatus: r.gone_status,
          rev: r.rev,
          headCid: r.head_cid,
          dataCid: r.data_cid,
          signingKey: r.signing_key,
          recordsCount: Number(r.records_count),
        },
        headLoc:
          r.head_pack === null
            ? null
            : { packId: Number(r.head_pack), packKey: r.head_key, packSize: Number(r.head_size ?? 0), offset: Number(r.head_offset), length: r.head_length!, refcount: Number(r.head_refcount) },
        headPackBlocks: r.head_blocks,
      },
    ]),
  );
}

/**
 * The share of the mirror's records that `records` records are: against `records`' planner
 * estimate, or for a table not analyzed yet its size at 128 bytes a row (which overstates its
 * rows). 1 (all) for an empty mirror.
 */
async function mirrorShare(db: pg.ClientBase, records: number): Promise<number> {
  const { rows } = await db.query<{ n: string }>(`SELECT CASE WHEN reltuples < 0 THEN pg_relation_size(oid) / 128 ELSE reltuples END AS n FROM pg_class WHERE oid = 'records'::regclass`);
  const n = Number(rows[0]?.n ?? 0);
  return n <= 0 ? 1 : Math.min(1, records / n);
}
