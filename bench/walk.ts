/**
 * Walker benchmark: validate and scrub over a mirror of at least 200,000 nodes, on the directory
 * blobstore and on S3 (a multiplex of two buckets of a local versitygw), with the visited set's
 * bytes per node and the process's peak RSS. Starts its own stack (PostgreSQL, S3) in a scratch
 * directory; the repos are built once by the reference implementation and cached
 * (`atproto/testing/make-repo.ts`). Prints progress to stderr and one JSON object to stdout.
 *
 *   node bench/walk.ts [--repos 13] [--records 5000] [--runs validate-local,scrub-local,validate-s3,scrub-s3]
 *     [--scheduled-max 256] [--root-concurrency 4] [--cpu-profile FILE] [--sql-stats]
 *
 * Goals (issue 4): validate ≥ 100,000 nodes/s from the directory store; ≤ 24 bytes per visited node.
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector';
import { tmpdir, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
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
import { runWalk, type WalkSpec } from '../graph/run.ts';
import { formatFindings } from '../graph/progress.ts';
import type { Node } from '../graph/nodes.ts';
import { testDids } from '../test/mirror.ts';

const { values } = parseArgs({
  options: {
    repos: { type: 'string', default: '13' },
    records: { type: 'string', default: '5000' },
    runs: { type: 'string', default: 'validate-local,scrub-local,validate-s3,scrub-s3' },
    'scheduled-max': { type: 'string', default: '256' },
    'root-concurrency': { type: 'string', default: '4' },
    /** Times each run is measured; the median is reported (and the best). */
    repeat: { type: 'string', default: '3' },
    /** Write a V8 CPU profile of the walks (not the setup) to this file. */
    'cpu-profile': { type: 'string' },
    /** Print the time and rows of the walks' queries, by statement. */
    'sql-stats': { type: 'boolean', default: false },
  },
});
const repoCount = Number(values.repos);
const recordCount = Number(values.records);
const log = (line: string) => process.stderr.write(`${line}\n`);
const post = (session: Session, method: string) => new Promise<unknown>((ok, fail) => session.post(method, (err, res) => (err ? fail(err) : ok(res))));

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
try {
  const admin = new pg.Client({ connectionString: stack.info.postgres.url });
  await admin.connect();
  await admin.query('CREATE DATABASE walkbench');
  await admin.end();
  const url = new URL(stack.info.postgres.url);
  url.pathname = '/walkbench';
  const pool = await connectPool(url.toString(), { max: 8 });
  await migrate(pool);
  // --sql-stats: time and rows of the pool's queries by statement (the Repo step's transaction
  // runs on a checked-out client and is not counted).
  const queries = new Map<string, { n: number; ms: number; rows: number }>();
  if (values['sql-stats']) {
    const query = pool.query.bind(pool) as (...args: unknown[]) => Promise<{ rowCount: number | null }>;
    (pool as unknown as { query: typeof query }).query = (...args: unknown[]) => {
      const text = args[0] as string | { text: string };
      const key = (typeof text === 'string' ? text : text.text).replace(/\s+/g, ' ').slice(0, 80);
      const started = performance.now();
      const p = query(...args);
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

  // The mirror: distinct repos (each its own collections besides posts), stored by the importer.
  const local = new LocalBlobStore(join(stateDir, 'bench-blobs'));
  const dids = testDids('bench', repoCount);
  let importMs = 0;
  let records = 0;
  for (const [k, did] of dids.entries()) {
    const made = await makeRepoCached({ did, records: recordCount, collections: ['app.bsky.feed.post', `com.example.bench${k}.like`, `com.example.bench${k}.follow`, `com.example.bench${k}.note`] });
    const started = performance.now();
    const repo = await verifyRepo(made.car, { did, signingKey: made.signingKey });
    await importRepo({ pool, blobs: local }, { repo, pds: 'https://pds.invalid', handle: undefined, signingKey: made.signingKey, filter: { mode: 'full', include: [], exclude: [], signal: [] } });
    importMs += performance.now() - started;
    records += made.records.length;
    log(`imported ${did} (${made.records.length} records)`);
  }

  // The same packs in two S3 buckets, multiplexed.
  const s3 = stack.info.s3!;
  const bucket = (name: string) =>
    new S3BlobStore({ bucket: name, config: { endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
  const mux = new MultiplexBlobStore({ components: [bucket('bench-a'), bucket('bench-b')], writeQuorum: 2 });
  const { rows: packs } = await pool.query<{ key: string; size_bytes: string }>('SELECT key, size_bytes FROM packs');
  for (const p of packs) await mux.put(p.key, (await local.get(p.key))!);
  // The images the generated posts reference (every 20th record), stored as blob mirroring
  // would: one object each, in both stores, with its row.
  let blobs = 0;
  for (let i = 0; i < recordCount; i += 20) {
    const bytes = new TextEncoder().encode(`image ${i}`);
    const cid = cidOf(0x55, bytes);
    await local.put(blobKey(cid), bytes);
    await mux.put(blobKey(cid), bytes);
    await pool.query(`INSERT INTO blobs (cid, did, size, mime, status, key) VALUES ($1, $2, $3, 'image/jpeg', 'present', $4)`, [cid, dids[0], bytes.length, blobKey(cid)]);
    blobs++;
  }
  const stored = await pool.query<{ blocks: string; bytes: string }>('SELECT count(*) AS blocks, sum(byte_length) AS bytes FROM blocks');

  const roots: Node[] = dids.map((did) => ({ type: 'Repo', did }));
  const stores: Record<string, BlobStore> = { local, s3: mux };
  const specs: Record<string, WalkSpec> = { validate: { type: 'validate' }, scrub: { type: 'scrub', scrub: { graceSeconds: 0 } } };
  const results: Record<string, unknown> = {};
  const session = values['cpu-profile'] ? new Session() : undefined;
  if (session) {
    session.connect();
    await post(session, 'Profiler.enable');
    await post(session, 'Profiler.start');
  }
  const measure = async (name: string) => {
    const [type, where] = name.split('-') as [string, string];
    const spec = { ...specs[type]!, scheduledMax: Number(values['scheduled-max']), rootConcurrency: Number(values['root-concurrency']) };
    const rssBefore = process.memoryUsage.rss();
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage.rss())), 100);
    const cpu0 = process.cpuUsage();
    const r = await runWalk({ pool, store: stores[where]! }, spec, roots, { progress: { label: name, emit: log } });
    const cpu = process.cpuUsage(cpu0);
    clearInterval(sampler);
    if (values['sql-stats']) {
      for (const [k, v] of [...queries].sort((a, b) => b[1].ms - a[1].ms).slice(0, 12)) log(`  ${v.n} queries ${v.ms.toFixed(0)} ms ${v.rows} rows: ${k}`);
      queries.clear();
    }
    return { r, type, cpuUs: cpu.user + cpu.system, rssBefore, rssPeak };
  };
  // One unreported run first: V8 compiles the hot paths during the first walk.
  await measure('validate-local');
  for (const name of values.runs.split(',')) {
    const tries: Awaited<ReturnType<typeof measure>>[] = [];
    for (let i = 0; i < Number(values.repeat); i++) tries.push(await measure(name));
    const rate = (t: (typeof tries)[number]) => t.r.totals.nodes / (t.r.elapsedMs / 1000);
    const sorted = [...tries].sort((a, b) => rate(a) - rate(b));
    const median = sorted[Math.floor(sorted.length / 2)]!;
    const { r, type } = median;
    results[name] = {
      nodes: r.totals.nodes,
      seconds: Math.round(r.elapsedMs) / 1000,
      nodesPerSecond: Math.round(rate(median)),
      nodesPerSecondEachTry: tries.map((t) => Math.round(rate(t))),
      blockBytesPerSecond: Math.round(r.totals.bytes / (r.elapsedMs / 1000)),
      // This process's CPU (user + system) per node: the walk's own cost, whatever else the
      // machine runs (PostgreSQL, the S3 server and other work share its cores).
      cpuMicrosecondsPerNode: Math.round((median.cpuUs / r.totals.nodes) * 100) / 100,
      blobstoreRequests: r.blockRequests,
      visitedBytesPerNode: Math.round((r.visited.bytes / r.visited.nodes) * 10) / 10,
      largestVisitedSet: r.visited.nodes,
      rssBeforeBytes: median.rssBefore,
      rssPeakBytes: median.rssPeak,
      byType: Object.fromEntries(Object.entries(r.totals.types).map(([t, x]) => [t, x.walked])),
      findings: formatFindings(r.totals),
      ...(type === 'scrub' ? { keysChecked: r.totals.counters['scrub.keys'] ?? 0 } : {}),
    };
  }
  if (session) {
    const { profile } = (await post(session, 'Profiler.stop')) as { profile: unknown };
    await writeFile(values['cpu-profile']!, JSON.stringify(profile));
    session.disconnect();
  }
  await pool.end();
  const out = {
    bench: 'walk',
    machine: { cpus: cpus().length, node: process.version },
    mirror: { repos: repoCount, records, blocks: Number(stored.rows[0]!.blocks), blockBytes: Number(stored.rows[0]!.bytes), packs: packs.length, blobs, importSeconds: Math.round(importMs / 10) / 100 },
    runs: results,
    // The whole process, import included (verifying the CARs is most of it).
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    loadAverage: loadavg().map((x) => Math.round(x * 100) / 100),
    goals: { validateLocalNodesPerSecond: 100_000, visitedBytesPerNode: 24 },
  };
  console.log(JSON.stringify(out, null, 2));
} finally {
  await stack.stop();
  await rm(stateDir, { recursive: true, force: true });
}
