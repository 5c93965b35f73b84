/**
 * Walker benchmark: validate and scrub over a mirror of at least 200,000 nodes, on the directory
 * blobstore and on S3 (a multiplex of two buckets of a local versitygw), with the visited set's
 * bytes per node and the process's peak RSS. Starts its own stack (PostgreSQL, S3) in a scratch
 * directory; the repos are built once by the reference implementation and cached
 * (`atproto/testing/make-repo.ts`). Prints progress to stderr and one JSON object to stdout.
 *
 *   node bench/walk.ts [--mirrors few-large,many-small] [--repos 13] [--records 5000]
 *     [--runs validate-local,scrub-local,validate-s3,scrub-s3] [--small-repos 2000] [--small-records 10]
 *     [--small-runs validate-local,scrub-local] [--small-build batch|import] [--scheduled-max 256] [--root-concurrency 256]
 *     [--batch-repos N] [--batch-records N] [--cpu-profile FILE] [--alloc-profile FILE] [--sql-stats] [--explain] [--compare DIR,…]
 *
 * Two mirrors, each in its own database, so the walker's cost per repo shows beside its cost per
 * node: `few-large` (13 repos × 5,000 records) and `many-small` (2,000 repos × 10 records). Both
 * use valid did:plc DIDs, and their CARs are cached like every test repo.
 *
 * Goals: validate ≥ 200,000 nodes/s from the directory store on both mirrors, the two within
 * ±20 % of each other (issue 13); ≤ 24 bytes per visited node (issue 4).
 *
 * `npm run bench` runs it with the node flags of a worker whose every job is walk or maintenance
 * (REPOWALK_WALK_NODE_FLAGS, scripts/env.sh): run directly, give them yourself
 * (`node --max-semi-space-size=32 bench/walk.ts …`).
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector';
import { tmpdir, cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { loadConfig } from '../config/load.ts';
import { startStack } from '../stack/stack.ts';
import { connectPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { S3BlobStore } from '../storage/blobstore/s3.ts';
import { MultiplexBlobStore } from '../storage/blobstore/multiplex.ts';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { cidOf, makeRepoCached } from '../atproto/testing/make-repo.ts';
import { blobKey } from '../storage/keys.ts';
import { verifyRepo } from '../atproto/verify.ts';
import { importRepo } from '../backfill/import.ts';
import { storeBatch } from '../ingest/store.ts';
import type { SnapshotChange } from '../ingest/changes.ts';
import type { WalkSpec, runWalk } from '../graph/run.ts';
import type { Node } from '../graph/nodes.ts';
import { testDids } from '../test/mirror.ts';
import { type MeasuredWalk, measureWalk, postgresCpuMeter, walkFigures } from './walk-measure.ts';

const { values } = parseArgs({
  options: {
    mirrors: { type: 'string', default: 'few-large,many-small' },
    repos: { type: 'string', default: '13' },
    records: { type: 'string', default: '5000' },
    runs: { type: 'string', default: 'validate-local,scrub-local,validate-s3,scrub-s3' },
    'small-repos': { type: 'string', default: '2000' },
    'small-records': { type: 'string', default: '10' },
    'small-runs': { type: 'string', default: 'validate-local,scrub-local' },
    /**
     * How the many small repos are stored: `batch` as the bulk backfill stores them (`storeBatch`,
     * 250 repos a batch: one pack and one transaction a batch), or `import` one repo at a time
     * (`importRepo`: a pack per repo, as a backfill of one DID stores it). Until 2026-12-01 the
     * bench stored them one at a time, which hid a cost only shared packs have (each repo's root
     * copied its batch's whole pack index).
     */
    'small-build': { type: 'string', default: 'batch' },
    'scheduled-max': { type: 'string', default: '256' },
    'root-concurrency': { type: 'string', default: '256' },
    /** Repo batches (`RepoBatchOptions`): most repos and most records read together; unset, the walk's defaults. */
    'batch-repos': { type: 'string' },
    'batch-records': { type: 'string' },
    /** Times each run is measured; the median is reported (and the best). */
    repeat: { type: 'string', default: '3' },
    /** Write a V8 CPU profile of the walks (not the setup) to this file. */
    'cpu-profile': { type: 'string' },
    /**
     * Write a sampled allocation profile of the walks (not the setup) to this file, garbage
     * included (V8's sampling heap profiler, keeping what minor and major collections freed):
     * where the walk allocates, which is what its collections cost. Open it as a .heapprofile.
     */
    'alloc-profile': { type: 'string' },
    /** Print the time and rows of the walks' queries, by statement. */
    'sql-stats': { type: 'boolean', default: false },
    /** Print the plans and times of the refcount comparison the Repo reads make, for one repo and for a batch. */
    explain: { type: 'boolean', default: false },
    /**
     * Other checkouts of the project (their root directories, comma-separated): validate-local
     * with each one's walker and with this one's, alternated walk by walk in this process on the
     * same mirror, `--repeat` times each. On a machine others share, two runs of the bench
     * minutes apart see different loads; walks alternated see the same.
     */
    compare: { type: 'string' },
  },
});
const log = (line: string) => process.stderr.write(`${line}\n`);
const post = (session: Session, method: string, params: object = {}) => new Promise<unknown>((ok, fail) => session.post(method, params, (err, res) => (err ? fail(err) : ok(res))));

interface MirrorShape {
  name: string;
  repos: number;
  records: number;
  runs: string[];
}
const SHAPES: Record<string, MirrorShape> = {
  'few-large': { name: 'few-large', repos: Number(values.repos), records: Number(values.records), runs: values.runs.split(',') },
  'many-small': { name: 'many-small', repos: Number(values['small-repos']), records: Number(values['small-records']), runs: values['small-runs'].split(',') },
};
const shapes = values.mirrors.split(',').map((m) => {
  const shape = SHAPES[m];
  if (!shape) throw new Error(`unknown mirror ${JSON.stringify(m)}; known: ${Object.keys(SHAPES).join(', ')}`);
  return shape;
});

const stateDir = await mkdtemp(join(tmpdir(), 'repowalk-bench-'));
await chmod(stateDir, 0o755);
const config = loadConfig({ env: { REPOWALK_CACHE_DIR: process.env.REPOWALK_CACHE_DIR } });
const stack = await startStack({
  stateDir,
  cacheDir: config.cacheDir,
  temporal: { port: 0, uiPort: 0, ui: false, namespace: 'default' },
  postgres: { port: 0 },
  s3: { enabled: true, port: 0, buckets: ['bench-a', 'bench-b'], region: 'us-east-1' },
  log: (l) => log(`[stack] ${l}`),
});
const session = values['cpu-profile'] || values['alloc-profile'] ? new Session() : undefined;
const out: Record<string, unknown> = { bench: 'walk', machine: { cpus: cpus().length, node: process.version }, mirrors: {} };
try {
  if (session) {
    session.connect();
    await post(session, 'Profiler.enable');
  }
  for (const shape of shapes) (out.mirrors as Record<string, unknown>)[shape.name] = await benchMirror(shape);
  if (session) session.disconnect();
} finally {
  await stack.stop();
  await rm(stateDir, { recursive: true, force: true });
}
const validateRate = (m: string) => ((out.mirrors as Record<string, { runs: Record<string, { nodesPerSecond: number }> }>)[m]?.runs['validate-local']?.nodesPerSecond);
const few = validateRate('few-large');
const many = validateRate('many-small');
console.log(
  JSON.stringify(
    {
      ...out,
      // many-small ÷ few-large: 1 is a walker whose cost does not depend on how the nodes are split into repos.
      ...(few && many ? { validateManySmallOverFewLarge: Math.round((many / few) * 100) / 100 } : {}),
      // The whole process, import included (verifying the CARs is most of it).
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
      loadAverage: loadavg().map((x) => Math.round(x * 100) / 100),
      goals: { validateLocalNodesPerSecond: 200_000, manySmallWithinOfFewLarge: 0.2, visitedBytesPerNode: 24 },
    },
    null,
    2,
  ),
);

async function benchMirror(shape: MirrorShape): Promise<unknown> {
  const database = `walkbench_${shape.name.replace('-', '_')}`;
  const admin = new pg.Client({ connectionString: stack.info.postgres.url });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${database}`);
  await admin.end();
  const url = new URL(stack.info.postgres.url);
  url.pathname = `/${database}`;
  const pool = await connectPool(url.toString(), { max: 8 });
  await migrate(pool);
  // --sql-stats: time and rows of the walk's queries by statement, the pool's and those on
  // checked-out clients (the Repo batches' transactions) alike: every query goes through
  // `Client.prototype.query`. Wall time, which on an idle server is close to its CPU time.
  const queries = new Map<string, { n: number; ms: number; rows: number }>();
  if (values['sql-stats']) {
    const proto = pg.Client.prototype as unknown as { query: (...args: unknown[]) => Promise<{ rowCount: number | null }> };
    const query = proto.query;
    proto.query = function (this: unknown, ...args: unknown[]) {
      const p = query.apply(this, args);
      if (typeof (p as { then?: unknown } | undefined)?.then !== 'function') return p;
      const text = args[0] as string | { text: string };
      const key = (typeof text === 'string' ? text : text.text).replace(/\s+/g, ' ').slice(0, 100);
      const started = performance.now();
      void p.then((res) => {
        const st = queries.get(key) ?? { n: 0, ms: 0, rows: 0 };
        st.n++;
        st.ms += performance.now() - started;
        st.rows += res?.rowCount ?? 0;
        queries.set(key, st);
      }, () => {});
      return p;
    };
  }

  // The mirror: distinct repos, stored by the importer, or (many small, `--small-build batch`)
  // by the bulk backfill's store path, 250 a batch.
  const local = new LocalBlobStore(join(stateDir, `${shape.name}-blobs`));
  const dids = testDids(`bench${shape.name.replace('-', '')}`, shape.repos);
  const build = shape.name === 'many-small' ? values['small-build'] : 'import';
  if (build !== 'batch' && build !== 'import') throw new Error(`--small-build ${JSON.stringify(build)}: batch or import`);
  let importMs = 0;
  let records = 0;
  let pending: SnapshotChange[] = [];
  const storePending = async () => {
    if (pending.length > 0) await storeBatch({ pool, blobs: local }, pending, { filter: { keeps: () => true, keepsRepo: () => true, dropsRepos: false }, origin: 'backfill' });
    pending = [];
  };
  for (const [k, did] of dids.entries()) {
    // Collections of its own besides posts, so that repos share few record blocks.
    const collections = ['app.bsky.feed.post', `com.example.bench${k}.like`, `com.example.bench${k}.follow`, `com.example.bench${k}.note`];
    const made = await makeRepoCached({ did, records: shape.records, collections });
    const started = performance.now();
    const repo = await verifyRepo(made.car, { did, signingKey: made.signingKey });
    if (build === 'batch') {
      pending.push({ kind: 'snapshot', repo, pds: 'https://pds.invalid', handle: undefined, signingKey: made.signingKey });
      if (pending.length === 250 || k === dids.length - 1) await storePending();
    } else {
      await importRepo({ pool, blobs: local }, { repo, pds: 'https://pds.invalid', handle: undefined, signingKey: made.signingKey, filter: { mode: 'full', include: [], exclude: [], signal: [] } });
    }
    importMs += performance.now() - started;
    records += made.records.length;
    if (shape.repos <= 100 || k % 500 === 499) log(`${shape.name}: imported ${k + 1} of ${shape.repos} (${did}, ${made.records.length} records)`);
  }

  // The same packs in two S3 buckets, multiplexed (only when a run reads from S3).
  const stores: Record<string, BlobStore> = { local };
  const { rows: packs } = await pool.query<{ key: string; size_bytes: string }>('SELECT key, size_bytes FROM packs');
  if (shape.runs.some((r) => r.endsWith('-s3'))) {
    const s3 = stack.info.s3!;
    const bucket = (name: string) =>
      new S3BlobStore({ bucket: name, config: { endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
    stores.s3 = new MultiplexBlobStore({ components: [bucket(`bench-a`), bucket(`bench-b`)], writeQuorum: 2 });
    for (const p of packs) await stores.s3.put(p.key, (await local.get(p.key))!);
  }
  // The images the generated posts reference (every 20th record), stored as blob mirroring
  // would: one object each, in every store, with its row.
  let blobs = 0;
  for (let i = 0; i < shape.records; i += 20) {
    const bytes = new TextEncoder().encode(`image ${i}`);
    const cid = cidOf(0x55, bytes);
    for (const store of Object.values(stores)) await store.put(blobKey(cid), bytes);
    await pool.query(`INSERT INTO blobs (cid, did, size, mime, status, key) VALUES ($1, $2, $3, 'image/jpeg', 'present', $4) ON CONFLICT DO NOTHING`, [cid, dids[0], bytes.length, blobKey(cid)]);
    blobs++;
  }
  const stored = await pool.query<{ blocks: string; bytes: string }>('SELECT count(*) AS blocks, sum(byte_length) AS bytes FROM blocks');
  await pool.query('ANALYZE');

  if (values.explain) await explainRefcounts(pool, dids, shape.name);

  const pgCpuUs = await postgresCpuMeter(pool);
  const roots: Node[] = dids.map((did) => ({ type: 'Repo', did }));
  const specs: Record<string, WalkSpec> = { validate: { type: 'validate' }, scrub: { type: 'scrub', scrub: { graceSeconds: 0 } } };
  const results: Record<string, unknown> = {};
  const measure = async (name: string) => {
    const [type, where] = name.split('-') as [string, string];
    const spec = { ...specs[type]!, scheduledMax: Number(values['scheduled-max']), rootConcurrency: Number(values['root-concurrency']) };
    const repoBatch = {
      ...(values['batch-repos'] ? { maxRepos: Number(values['batch-repos']) } : {}),
      ...(values['batch-records'] ? { maxRecords: Number(values['batch-records']) } : {}),
    };
    const m = await measureWalk({ pool, store: stores[where]! }, spec, roots, { label: `${shape.name} ${name}`, emit: log, pgCpuUs, run: { repoBatch } });
    if (values['sql-stats']) {
      for (const [k, v] of [...queries].sort((a, b) => b[1].ms - a[1].ms).slice(0, 20)) log(`  ${v.n} queries ${v.ms.toFixed(0)} ms ${v.rows} rows: ${k}`);
      queries.clear();
    }
    return m;
  };
  if (values.compare) {
    results.compare = await compareWalkers(values.compare.split(','), { pool, store: local }, roots, shape.name, pgCpuUs);
    await pool.end();
    return { mirror: { repos: shape.repos, records, build }, runs: results };
  }
  // One unreported run first: V8 compiles the hot paths during the first walk.
  await measure('validate-local');
  if (session && values['cpu-profile']) await post(session, 'Profiler.start');
  if (session && values['alloc-profile']) {
    await post(session, 'HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
  }
  for (const name of shape.runs) {
    const tries: MeasuredWalk[] = [];
    for (let i = 0; i < Number(values.repeat); i++) tries.push(await measure(name));
    results[name] = walkFigures(tries);
  }
  if (session && values['alloc-profile']) {
    const { profile } = (await post(session, 'HeapProfiler.stopSampling')) as { profile: unknown };
    const file = shapes.length > 1 ? values['alloc-profile'].replace(/(\.heapprofile)?$/, `-${shape.name}$1`) : values['alloc-profile'];
    await writeFile(file, JSON.stringify(profile));
  }
  if (session && values['cpu-profile']) {
    const { profile } = (await post(session, 'Profiler.stop')) as { profile: unknown };
    const file = shapes.length > 1 ? values['cpu-profile']!.replace(/(\.cpuprofile)?$/, `-${shape.name}$1`) : values['cpu-profile']!;
    await writeFile(file, JSON.stringify(profile));
  }
  await pool.end();
  return {
    mirror: { repos: shape.repos, records, build, blocks: Number(stored.rows[0]!.blocks), blockBytes: Number(stored.rows[0]!.bytes), packs: packs.length, blobs, importSeconds: Math.round(importMs / 10) / 100 },
    runs: results,
  };
}

/**
 * validate-local with the walker of each checkout in `dirs` and with this one's, alternated: per
 * walker the median and least of each figure over `--repeat` walks (after one unreported walk
 * each, for V8 to compile them).
 */
async function compareWalkers(dirs: string[], stores: { pool: pg.Pool; store: BlobStore }, roots: Node[], label: string, pgCpuUs: () => number) {
  const sides = [...dirs.map((d) => resolve(d)), resolve(import.meta.dirname, '..')];
  const walkers = await Promise.all(sides.map(async (d) => (await import(pathToFileURL(join(d, 'graph/run.ts')).href)).runWalk as typeof runWalk));
  const spec: WalkSpec = { type: 'validate', scheduledMax: Number(values['scheduled-max']), rootConcurrency: Number(values['root-concurrency']) };
  const one = async (k: number) => {
    const pg0 = pgCpuUs();
    const cpu0 = process.cpuUsage();
    const main0 = process.threadCpuUsage();
    const started = performance.now();
    const r = await walkers[k]!(stores, spec, roots);
    const ms = performance.now() - started;
    const cpu = process.cpuUsage(cpu0);
    const main = process.threadCpuUsage(main0);
    const n = r.totals.nodes;
    return { nodes: n, rate: n / (ms / 1000), cpu: (cpu.user + cpu.system) / n, main: (main.user + main.system) / n, pg: (pgCpuUs() - pg0) / n, findings: Object.keys(r.totals.findings).length };
  };
  for (let k = 0; k < walkers.length; k++) await one(k);
  const got: Awaited<ReturnType<typeof one>>[][] = walkers.map(() => []);
  for (let i = 0; i < Number(values.repeat); i++) {
    for (let k = 0; k < walkers.length; k++) {
      const x = await one(k);
      got[k]!.push(x);
      log(`${label} ${sides[k]}: ${Math.round(x.rate)} nodes/s, µs a node: process ${x.cpu.toFixed(2)} (walk thread ${x.main.toFixed(2)}), PostgreSQL ${x.pg.toFixed(2)}`);
    }
  }
  const r2 = (x: number) => Math.round(x * 100) / 100;
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const figure = (xs: number[]) => ({ median: r2(median(xs)), least: r2(Math.min(...xs)) });
  return Object.fromEntries(
    sides.map((d, k) => {
      const g = got[k]!;
      return [
        d,
        {
          nodes: g[0]!.nodes,
          findings: g[0]!.findings,
          nodesPerSecond: figure(g.map((x) => Math.round(x.rate))),
          cpuMicrosecondsPerNode: figure(g.map((x) => x.cpu)),
          mainThreadCpuMicrosecondsPerNode: figure(g.map((x) => x.main)),
          postgresCpuMicrosecondsPerNode: figure(g.map((x) => x.pg)),
          totalCpuMicrosecondsPerNode: figure(g.map((x) => x.cpu + x.pg)),
        },
      ];
    }),
  );
}

/**
 * The refcount comparison of the packs a Repo read covers (`refcountMismatchesInPacks`), planned
 * and run for the packs of one repo and of the first 256: it should look blocks up in the indexes
 * on `records.cid` and `events.cid` (migration 0005), not scan both tables per statement.
 */
async function explainRefcounts(pool: pg.Pool, dids: string[], label: string): Promise<void> {
  for (const n of [1, Math.min(256, dids.length)]) {
    const { rows: packRows } = await pool.query<{ pack_id: string }>(
      'SELECT DISTINCT b.pack_id FROM records r JOIN blocks b ON b.cid = r.cid WHERE r.did = ANY($1::text[])',
      [dids.slice(0, n)],
    );
    const packs = packRows.map((r) => Number(r.pack_id));
    const { rows } = await pool.query<{ 'QUERY PLAN': string }>(
      `EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON)
       WITH blk AS MATERIALIZED (SELECT cid, refcount FROM blocks WHERE pack_id = ANY($1::bigint[])),
            refs AS (SELECT u.cid, count(*) AS n FROM (
                SELECT x.cid FROM records x JOIN blk ON blk.cid = x.cid
                UNION ALL SELECT x.cid FROM events x JOIN blk ON blk.cid = x.cid
                UNION ALL SELECT x.head_cid FROM repos x JOIN blk ON blk.cid = x.head_cid) u GROUP BY u.cid)
       SELECT blk.cid FROM blk LEFT JOIN refs ON refs.cid = blk.cid
       WHERE blk.refcount <> coalesce(refs.n, 0)`,
      [packs],
    );
    log(`${label}: refcount comparison for the packs of ${n} repo(s) (${packs.length} packs):`);
    for (const r of rows) log(`  ${r['QUERY PLAN']}`);
  }
}
