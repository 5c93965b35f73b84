/**
 * Repo reads a batch of roots at a time give each repo exactly what a read of it alone gives,
 * whatever the batch sizes, the order the steps ask in, or repos without a row.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { freshDatabase } from '../test/stack.ts';
import { openPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { cidMapKey, keyWord } from './blocks.ts';
import { LocationTable } from './locations.ts';
import type { Node } from './nodes.ts';
import { RepoBatches, type RepoWants } from './repo-batch.ts';
import type { PackRow } from './steps/context.ts';
import { buildMirror, testDids } from '../test/mirror.ts';
import { MemoryFindings } from './findings.ts';
import { runWalk } from './run.ts';
import { storeBatch } from '../ingest/store.ts';
import type { SnapshotChange } from '../ingest/changes.ts';
import { verifyRepo } from '../atproto/verify.ts';
import { generateRecords, makeRepo, newKeypair } from '../atproto/testing/make-repo.ts';

let pool: pg.Pool;
let dir: string;
const dids = testDids('repobatch', 5);
const missing = testDids('repobatchnone', 1)[0]!;
const all: RepoWants = { records: true, events: true, counts: true, locations: true, refcounts: true };

beforeAll(async () => {
  pool = openPool(await freshDatabase('graph_repo_batch'));
  await migrate(pool);
  dir = await mkdtemp(join(tmpdir(), 'repowalk-repo-batch-'));
  await buildMirror({ pool, blobs: new LocalBlobStore(dir) }, dids.map((did, i) => ({ did, records: 20 + 15 * i })));
}, 120_000);

afterAll(async () => {
  await pool?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/**
 * What a read gives, with where its locations place the repo's record blocks and head, as plain
 * data. The refcount comparison counts
 * heads among the repos read together, so another repo's head in a pack read in bulk is a
 * disagreement unless that repo was read in the same batch: those entries (no walk of `did`
 * reaches them) are left out.
 */
async function readOf(batches: RepoBatches, did: string) {
  const locations = new LocationTable();
  const data = await batches.read(did, locations);
  const { rows: own } = await pool.query<{ cid: Buffer }>(
    `SELECT cid FROM records WHERE did = $1 UNION SELECT head_cid FROM repos WHERE did = $1 AND head_cid IS NOT NULL ORDER BY 1`,
    [did],
  );
  const placed = own.map(({ cid }) => {
    const l = locations.get(cid);
    return l ? `${l.packId}/${l.packKey}/${l.packSize}:${l.offset}+${l.length} refcount ${l.refcount}` : 'missing';
  });
  const { rows } = await pool.query<{ head_cid: Buffer }>('SELECT head_cid FROM repos WHERE did <> $1 AND head_cid IS NOT NULL', [did]);
  const others = new Set(rows.map((r) => cidMapKey(r.head_cid)));
  if (data.refcounts) {
    // The words say "not among them" only of blocks that are not.
    for (const k of data.refcounts.mismatches.keys()) expect(data.refcounts.mismatchWords.has(keyWord(k))).toBe(true);
    for (const k of data.refcounts.blocks) expect(data.refcounts.blockWords.has(keyWord(k))).toBe(true);
  }
  const mismatches = data.refcounts && new Map([...data.refcounts.mismatches].filter(([k]) => !others.has(k)));
  const refcounts = data.refcounts && { ...data.refcounts, mismatches, mismatchWords: new Set([...mismatches!.keys()].map(keyWord)) };
  return { data: { ...data, refcounts }, locations: placed, copied: locations.size };
}

describe('RepoBatches', () => {
  it('reads each repo as a read of it alone does, in batches cut by the record budget and in any order', async () => {
    const roots: Node[] = [...dids, missing].map((did) => ({ type: 'Repo', did }));
    const alone = new Map<string, Awaited<ReturnType<typeof readOf>>>();
    for (const did of [...dids, missing]) alone.set(did, await readOf(new RepoBatches(pool, [{ type: 'Repo', did }], undefined, all, new Map()), did));
    expect(alone.get(missing)!.data.row).toBeNull();
    expect(alone.get(dids[4]!)!.data.recordRows!.length).toBe(80);
    expect(alone.get(dids[4]!)!.locations.length).toBeGreaterThan(80);
    expect(alone.get(dids[4]!)!.locations).not.toContain('missing');
    // The block index read in bulk is shared with the root's table, not copied into it.
    expect(alone.get(dids[4]!)!.copied).toBe(0);

    let queries = 0;
    const counting = new Proxy(pool, {
      get: (target, prop) => (prop === 'connect' ? () => (queries++, target.connect()) : Reflect.get(target, prop)),
    });
    const known = new Map<string, PackRow>();
    // A budget of 60 records: the 20- and 35-record repos go together, the rest one by one.
    const batched = new RepoBatches(counting, roots, undefined, all, known, { maxRecords: 60, readAhead: false });
    const order = [dids[0]!, dids[3]!, dids[1]!, missing, dids[2]!, dids[4]!];
    const got = await Promise.all(order.map((did) => readOf(batched, did)));
    for (const [i, did] of order.entries()) expect(got[i], did).toEqual(alone.get(did));
    expect(queries).toBeLessThan(order.length);
    // The packs read came with their rows, for the Pack steps.
    expect(known.size).toBeGreaterThan(0);

    // Read again (a root walked twice): read afresh, the same.
    expect(await readOf(batched, dids[2]!)).toEqual(alone.get(dids[2]!));
  });

  it('reads the next batch ahead, while the walk takes the last one, and each repo as a read of it alone does', async () => {
    const roots: Node[] = dids.map((did) => ({ type: 'Repo', did }));
    const batches: string[][] = [];
    const alone = new Map<string, Awaited<ReturnType<typeof readOf>>>();
    for (const did of dids) alone.set(did, await readOf(new RepoBatches(pool, [{ type: 'Repo', did }], undefined, all, new Map()), did));
    const spy = spyPool(pool, (sql, params) => {
      if (sql.includes('FROM repos r LEFT JOIN blocks')) batches.push((params as string[][])[0]!);
    });
    // A budget of 120 records, ramped up from a quarter: 30 (d0 alone), 60 (d1 alone), 120 (d2 + d3: 115), 120 (d4).
    const ahead = new RepoBatches(spy, roots, undefined, all, new Map(), { maxRecords: 120 });
    expect(await readOf(ahead, dids[0]!)).toEqual(alone.get(dids[0]!));
    // Nobody asked for d1 yet: its batch was started when d0's was read, and the one after it
    // when d1's was read and d0's all taken (one batch ahead of the one the walk takes from).
    await vi.waitFor(() => expect(batches.length).toBe(3));
    expect(batches.map((b) => b[0])).toEqual([dids[0], dids[1], dids[2]]);
    expect(await readOf(ahead, dids[1]!)).toEqual(alone.get(dids[1]!));
    await vi.waitFor(() => expect(batches.length).toBe(4));
    expect(await readOf(ahead, dids[2]!)).toEqual(alone.get(dids[2]!));
    await new Promise((r) => setTimeout(r, 50));
    expect(batches.length).toBe(4);
    for (const did of dids.slice(3)) expect(await readOf(ahead, did), did).toEqual(alone.get(did));
    // One batch per cut of the budget: [d0], [d1], [d2, d3], [d4] — each started once.
    expect(batches.map((b) => b[0])).toEqual([dids[0], dids[1], dids[2], dids[4]]);
    expect(batches[1]).toEqual([dids[1], dids[2], dids[3], dids[4]]);
  });

  it('reads a batch the same by passes over whole tables as by lookups', async () => {
    const roots: Node[] = [...dids, missing].map((did) => ({ type: 'Repo', did }));
    const plain = async (plan: 'scan' | 'lookup', did: string) => {
      const { data, locations } = await readOf(new RepoBatches(pool, roots, undefined, all, new Map(), { plan, readAhead: false }), did);
      return {
        ...data,
        recordRows: data.recordRows?.read(0, data.recordRows.length),
        recordCounts: data.recordRows?.collectionCounts(),
        events: data.events?.read(0, data.events.length),
        locations,
      };
    };
    for (const did of [...dids, missing]) {
      const scan = await plain('scan', did);
      expect(await plain('lookup', did), did).toEqual(scan);
      if (did !== missing) expect(scan.recordRows!.length).toBe(scan.row!.recordsCount);
    }
  });

  it("looks up only the records outside their repo's head pack, and never joins the record index with the block index", async () => {
    const roots: Node[] = dids.map((did) => ({ type: 'Repo', did }));
    const asked: { sql: string; cids: number }[] = [];
    const spy = spyPool(pool, (sql, params) => {
      asked.push({ sql, cids: sql.includes('generate_series') && Array.isArray(params) && typeof params[1] === 'number' ? params[1] : 0 });
    });
    // A repo a batch: the records another repo stored first are in a pack no head of the batch names.
    const batched = new RepoBatches(spy, roots, undefined, all, new Map(), { readAhead: false, maxRepos: 1 });
    const alone = new Map<string, Awaited<ReturnType<typeof readOf>>>();
    for (const did of dids) alone.set(did, await readOf(new RepoBatches(pool, [{ type: 'Repo', did }], undefined, all, new Map()), did));
    for (const did of dids) expect(await readOf(batched, did), did).toEqual(alone.get(did));
    expect(asked.filter((q) => /FROM records r (CROSS )?JOIN/.test(q.sql))).toEqual([]);
    // Repos built by the same generator share their first records: those sit in the pack of the
    // repo that stored them first, and are looked up, each once for its repo; the rest are found
    // in the head packs.
    const looked = asked.reduce((n, q) => n + q.cids, 0);
    const { rows } = await pool.query<{ n: string; all: string }>(
      `SELECT count(DISTINCT (r.did, r.cid)) FILTER (WHERE b.pack_id <> h.pack_id) AS n, count(*) AS all
       FROM records r JOIN repos o ON o.did = r.did JOIN blocks h ON h.cid = o.head_cid JOIN blocks b ON b.cid = r.cid WHERE r.did = ANY($1::text[])`,
      [dids],
    );
    expect(looked).toBeGreaterThan(0);
    expect(looked).toBe(Number(rows[0]!.n));
    expect(looked).toBeLessThan(Number(rows[0]!.all));
  });

  it('skips the roots an earlier attempt finished', async () => {
    const roots: Node[] = dids.map((did) => ({ type: 'Repo', did }));
    let asked: string[][] = [];
    const spy = new Proxy(pool, {
      get: (target, prop) =>
        prop === 'connect'
          ? async () => {
              const client = await target.connect();
              const query = client.query.bind(client) as (...a: unknown[]) => Promise<unknown>;
              (client as unknown as { query: typeof query }).query = (...a: unknown[]) => {
                const params = a[1] as unknown[] | undefined;
                if (typeof a[0] === 'string' && a[0].includes('FROM repos r LEFT JOIN blocks')) asked.push(params![0] as string[]);
                return query(...a);
              };
              return client;
            }
          : Reflect.get(target, prop),
    });
    const batches = new RepoBatches(spy, roots, new Set([1, 2]), all, new Map());
    await readOf(batches, dids[0]!);
    expect(asked).toEqual([[dids[0], dids[3], dids[4]]]);
    asked = [];
  });
});

/** The pool, whose checked-out clients tell `seen` of every text query (patched for that checkout only: the pool hands the client out again). */
function spyPool(pool: pg.Pool, seen: (sql: string, params: unknown) => void): pg.Pool {
  return new Proxy(pool, {
    get: (target, prop) =>
      prop === 'connect'
        ? async () => {
            const client = await target.connect();
            const { query, release } = client;
            client.query = ((...a: unknown[]) => {
              if (typeof a[0] === 'string') seen(a[0], a[1]);
              return (query as (...a: unknown[]) => unknown).apply(client, a);
            }) as typeof client.query;
            client.release = (...a) => {
              client.query = query;
              client.release = release;
              return release.apply(client, a);
            };
            return client;
          }
        : Reflect.get(target, prop),
  });
}

describe("RepoBatches, a head's pack shared with many other repos", () => {
  // Live sync stores the commits of thousands of repos in one pack: a repo's head can sit among
  // many blocks of repos its batch does not hold. Here 40 repos stored in one batch, one pack.
  let shared: pg.Pool;
  let sharedDir: string;
  let store: LocalBlobStore;
  const many = testDids('repobatchsharedpack', 40);

  beforeAll(async () => {
    shared = openPool(await freshDatabase('graph_repo_batch_shared'));
    await migrate(shared);
    sharedDir = await mkdtemp(join(tmpdir(), 'repowalk-repo-batch-shared-'));
    store = new LocalBlobStore(sharedDir);
    const keypair = await newKeypair();
    const changes: SnapshotChange[] = [];
    for (const [i, did] of many.entries()) {
      const made = await makeRepo({ did, records: generateRecords(8).map((r) => ({ ...r, value: { ...r.value, i } })), keypair });
      changes.push({ kind: 'snapshot', repo: await verifyRepo(made.car, { did, signingKey: made.signingKey }), pds: 'https://pds.invalid', handle: undefined, signingKey: made.signingKey });
    }
    await storeBatch({ pool: shared, blobs: store }, changes, { filter: { keeps: () => true, keepsRepo: () => true, dropsRepos: false }, origin: 'backfill' });
  }, 120_000);

  afterAll(async () => {
    await shared?.end();
    if (sharedDir) await rm(sharedDir, { recursive: true, force: true });
  });

  const headPackOf = async (did: string) =>
    (await shared.query<{ id: string; key: string }>('SELECT p.id, p.key FROM repos r JOIN blocks b ON b.cid = r.head_cid JOIN packs p ON p.id = b.pack_id WHERE r.did = $1', [did])).rows[0]!;

  it('reads it whole for a batch that holds most of its repos, and not for one repo, which finds its own blocks all the same', async () => {
    const did = many[7]!;
    const pack = await headPackOf(did);
    const ownBlocks = (await shared.query<{ cid: Buffer }>('SELECT cid FROM records WHERE did = $1', [did])).rows;

    const knownAlone = new Map<string, PackRow>();
    const alone = new LocationTable();
    const data = await new RepoBatches(shared, [{ type: 'Repo', did }], undefined, all, knownAlone).read(did, alone);
    // Not read whole: its records are located by their CIDs, into the root's own table.
    expect(knownAlone.has(pack.key)).toBe(false);
    expect(data.refcounts?.packs.has(Number(pack.id)) ?? false).toBe(false);
    for (const { cid } of ownBlocks) expect(alone.get(cid)?.packKey).toBe(pack.key);
    expect(alone.size).toBe(ownBlocks.length);

    const knownAll = new Map<string, PackRow>();
    const batches = new RepoBatches(shared, many.map((d) => ({ type: 'Repo', did: d })), undefined, all, knownAll, { readAhead: false });
    const together = new LocationTable();
    const read = await batches.read(did, together);
    expect(knownAll.has(pack.key)).toBe(true);
    expect(read.refcounts!.packs.has(Number(pack.id))).toBe(true);
    for (const { cid } of ownBlocks) expect(together.get(cid)?.packKey).toBe(pack.key);
    expect(together.size).toBe(0);
  });

  it('validates such a repo alone: no findings, every node reached, and a wrong refcount in its head pack still found', async () => {
    const did = many[11]!;
    const clean = new MemoryFindings();
    const alone = await runWalk({ pool: shared, store }, { type: 'validate' }, [{ type: 'Repo', did }], { findings: clean });
    expect(clean.findings).toEqual([]);
    const withAll = await runWalk({ pool: shared, store }, { type: 'validate' }, many.map((d) => ({ type: 'Repo', did: d })), { findings: new MemoryFindings() });
    expect(alone.totals.types.Record?.walked).toBe(8);
    expect(alone.totals.types.MstNode?.walked).toBeGreaterThan(0);
    expect(alone.totals.nodes * many.length).toBeGreaterThan(withAll.totals.nodes * 0.9);

    // One of its MST nodes (not a record: no row names it) gets a refcount no reference explains.
    const { rows } = await shared.query<{ cid: Buffer }>(
      `SELECT b.cid FROM blocks b JOIN repos r ON r.did = $1 JOIN blocks h ON h.cid = r.head_cid
       WHERE b.pack_id = h.pack_id AND b.cid <> r.head_cid AND b.cid = r.data_cid`,
      [did],
    );
    expect(rows).toHaveLength(1);
    await shared.query('UPDATE blocks SET refcount = refcount + 3 WHERE cid = $1', [rows[0]!.cid]);
    try {
      const found = new MemoryFindings();
      await runWalk({ pool: shared, store }, { type: 'validate' }, [{ type: 'Repo', did }], { findings: found });
      expect(found.findings.filter((f) => f.check === 'refcount')).toHaveLength(1);
    } finally {
      await shared.query('UPDATE blocks SET refcount = refcount - 3 WHERE cid = $1', [rows[0]!.cid]);
    }
  });
});
