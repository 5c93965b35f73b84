/**
 * Live sync throughput: a loopback upstream (bench/sync-firehose.ts, in a child process) replays a
 * generated firehose (signed commits with sync v1.1 proofs) as fast as the consumer reads it
 * (WebSocket backpressure), and the consumer (sync/consumer.ts, no Temporal) verifies and stores
 * every frame through the batched store into PostgreSQL and a directory blobstore. Reports applied
 * events/s, the p99 lag (a frame's apply time minus its send time, sampled per batch), and RSS
 * over the run.
 *
 *   node bench/sync.ts --database-url URL [--repos 2000] [--commits 100] [--quick] [--max-batch 500] [--verify-threads 1] [--walk]
 *
 * By default 2,000 repos × 100 commits (202,000 frames, issue 9's "at least 200,000 commits");
 * `--quick` is 200 × 50 (10,200). The firehose is generated once per parameters and cached
 * (bench/sync-firehose.ts); this process reads only its description, the upstream its frames.
 *
 * RSS (`rssMb`) is sampled every second with the events applied by then: after the warm-up
 * (the first 10 % of the events) its min, median and max, and `slopeMbPer100kEvents`, the
 * least-squares slope of RSS against events applied over the second half of the events, so
 * that "flat" is a number (a few MB per 100k events is noise; a leak of a KB per event is 100).
 *
 * CPU per event: `cpuMsPerEvent` is this process's (the consumer: its thread and its verify
 * threads), `cpuMsPerEventMainThread` the consumer's own thread's part of it,
 * `cpuMsPerEventPostgres` the run database's backends' (PostgreSQL on this machine), and
 * `cpuMsPerEventUpstream` the upstream process's.
 *
 * `--walk` then validates and scrubs the mirror live sync made (`walk`, as bench/walk.ts reports a
 * walk): each repo's blocks spread over the packs of the batches that stored its commits, and its
 * head in a pack shared with the other repos of its last commit's batch, the shape of a mirror
 * kept current by the firehose.
 */
import { parseArgs } from 'node:util';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync, fork } from 'node:child_process';
import { loadavg } from 'node:os';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { scratchDatabase } from './scratch-db.ts';
import { connectPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { FilterOptions } from '../backfill/filters.ts';
import { runSubscription } from '../sync/consumer.ts';
import { secp256k1Backend } from '../atproto/signature.ts';
import type { AtprotoIdentity } from '../atproto/net/index.ts';
import { firehoseCacheFile, generatedFirehose } from './sync-firehose.ts';
import { threadsCpu } from './thread-cpu.ts';
import { measureWalk, postgresCpuMeter, walkFigures } from './walk-measure.ts';
import type { Node } from '../graph/nodes.ts';

const { values } = parseArgs({
  options: { 'database-url': { type: 'string' }, repos: { type: 'string' }, commits: { type: 'string' }, quick: { type: 'boolean' }, 'max-batch': { type: 'string', default: '500' }, 'verify-threads': { type: 'string', default: '1' }, walk: { type: 'boolean', default: false } },
});
const baseUrl = values['database-url'] ?? process.env.DATABASE_URL;
if (!baseUrl) throw new Error('bench/sync.ts needs --database-url or DATABASE_URL (bench/run.ts starts a stack and passes one)');
const log = (l: string) => console.error(l);
const repos = Number(values.repos ?? (values.quick ? 200 : 2000));
const commits = Number(values.commits ?? (values.quick ? 50 : 100));
// Generated (the first time) in a process of its own: the consumer's RSS starts without it.
if (!existsSync(`${firehoseCacheFile(repos, commits)}.json`)) {
  execFileSync(process.execPath, [...process.execArgv, fileURLToPath(new URL('./sync-firehose.ts', import.meta.url)), '--generate', String(repos), String(commits)], { stdio: 'inherit' });
}
const hose = await generatedFirehose(repos, commits, log);

const db = await scratchDatabase(baseUrl, 'bench_sync');
const pool = await connectPool(db.url, { max: 4 });
await migrate(pool);
const blobDir = mkdtempSync(join(tmpdir(), 'repowalk-bench-sync-'));
const blobs = new LocalBlobStore(blobDir);

// The upstream runs in a process of its own (bench/sync-firehose.ts run as a child).
const upstream = fork(fileURLToPath(new URL('./sync-firehose.ts', import.meta.url)), [hose.file], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
const port = await new Promise<number>((resolve, reject) => {
  upstream.once('message', (m: { port: number }) => resolve(m.port));
  upstream.once('exit', (code) => reject(new Error(`the upstream exited with code ${code}`)));
});
const host = `http://127.0.0.1:${port}`;
const applyAt = new Float64Array(hose.frames + 2);

const rss: number[] = [];
/** Events applied (the cursor) when each RSS sample was taken. */
const rssAt: number[] = [];
let appliedSoFar = 0;
const baselineMb = process.memoryUsage().rss / 1048576;
const heap: string[] = [];
const sampler = setInterval(() => {
  const m = process.memoryUsage();
  rss.push(m.rss / 1048576);
  rssAt.push(appliedSoFar);
  heap.push(`${Math.round(m.heapUsed / 1048576)}/${Math.round(m.external / 1048576)}/${Math.round(m.arrayBuffers / 1048576)}`);
}, 1000);
const lags: number[] = [];
const stop = new AbortController();
const last = hose.frames;
const t0 = performance.now();
const cpu0 = process.cpuUsage();
const main0 = process.threadCpuUsage();
const pg0 = await backendsCpu();
const threads0 = threadsCpu();
let threadsAtEnd: Map<string, number> | undefined;
const progress = await runSubscription({
  host,
  stores: { pool, blobs },
  filter: FilterOptions.parse({}),
  maxBatch: Number(values['max-batch']),
  verifyThreads: Number(values['verify-threads']),
  batchWaitMs: 20,
  signal: stop.signal,
  resolve: async (did) => ({ did, pds: host, handle: undefined, signingKey: hose.signingKey }) as unknown as AtprotoIdentity,
  requestResync: async () => {},
  onProgress: (p) => {
    if (p.cursor !== undefined && p.cursor < applyAt.length) applyAt[p.cursor] = performance.timeOrigin + performance.now();
    if (p.cursor !== undefined) appliedSoFar = p.cursor;
    if (p.cursor === last) {
      threadsAtEnd = threadsCpu(); // before the verify threads end with the run
      stop.abort();
    }
  },
});
const seconds = (performance.now() - t0) / 1000;
// The consumer: every thread of this process (its own and its verify threads).
const cpu = process.cpuUsage(cpu0);
const mainCpu = process.threadCpuUsage(main0);
const threads1 = threadsAtEnd ?? threadsCpu();
const byThread: Record<string, number> = {};
for (const [name, ms] of threads1) byThread[name] = Math.round(((ms - (threads0.get(name) ?? 0)) / hose.frames) * 1000) / 1000;
const pg1 = await backendsCpu();
const pgCpu = pg0 === null || pg1 === null ? null : pg1 - pg0;
clearInterval(sampler);
const report = await new Promise<{ sentAt: number[]; cpuMs: number }>((resolve) => {
  upstream.once('message', resolve);
  upstream.send({ report: true });
});
for (let seq = 1; seq < applyAt.length; seq++) if (applyAt[seq] && report.sentAt[seq]) lags.push(applyAt[seq]! - report.sentAt[seq]!);
const records = Number((await pool.query('SELECT count(*) AS n FROM records')).rows[0].n);
let walk: Record<string, unknown> | undefined;
if (values.walk) {
  await pool.query('ANALYZE');
  const roots: Node[] = (await pool.query<{ did: string }>('SELECT did FROM repos ORDER BY did')).rows.map((r) => ({ type: 'Repo', did: r.did }));
  const pgCpuUs = await postgresCpuMeter(pool);
  walk = {};
  for (const [name, spec] of [['validate', { type: 'validate' }], ['scrub', { type: 'scrub', scrub: { graceSeconds: 0 } }]] as const) {
    // One unreported walk first (V8 compiles the hot paths), then three, the median reported.
    await measureWalk({ pool, store: blobs }, spec, roots, { label: `sync mirror ${name}`, emit: log, pgCpuUs });
    const tries = [];
    for (let i = 0; i < 3; i++) tries.push(await measureWalk({ pool, store: blobs }, spec, roots, { label: `sync mirror ${name}`, emit: log, pgCpuUs }));
    walk[name] = walkFigures(tries);
  }
}
await pool.end();
await db.drop();
// The run's packs (~280 MB) are not needed past it.
rmSync(blobDir, { recursive: true, force: true });
lags.sort((a, b) => a - b);
const applied = progress.outcomes.imported ?? 0;
console.log(
  JSON.stringify({
    frames: hose.frames,
    repos: hose.dids.length,
    seconds,
    eventsPerSecond: hose.frames / seconds,
    verifyThreads: Number(values['verify-threads']),
    secp256k1Backend,
    cpuMsPerEvent: (cpu.user + cpu.system) / 1000 / hose.frames,
    cpuMsPerEventMainThread: (mainCpu.user + mainCpu.system) / 1000 / hose.frames,
    cpuMsPerEventPostgres: pgCpu === null ? null : pgCpu / hose.frames,
    cpuMsPerEventUpstream: report.cpuMs / hose.frames,
    // This process's CPU per event by OS thread name: the consumer's thread ('node'), its verify
    // threads (each a Worker named 'verify'), V8's helpers (GC, compiler), libuv's pool.
    cpuMsPerEventByThread: byThread,
    loadAverage: loadavg().map((l) => Math.round(l * 100) / 100),
    appliedCommits: applied,
    outcomes: progress.outcomes,
    errors: progress.errors,
    records,
    p99LagMs: lags.length ? lags[Math.min(lags.length - 1, Math.floor(lags.length * 0.99))] : null,
    rssMb: { baseline: baselineMb, peak: Math.max(baselineMb, ...rss), end: rss[rss.length - 1] ?? baselineMb, samples: rss.length, ...rssSummary(), bySecond: rss.map(Math.round), heapExternalBuffers: heap },
    ...(walk ? { walk } : {}),
  }),
);

/**
 * RSS after the warm-up (samples once 10 % of the events were applied): min, median, max, and
 * the least-squares slope of RSS against events applied over the second half of the events, in
 * MB per 100,000 events.
 */
function rssSummary(): { afterWarmup: { min: number; median: number; max: number; samples: number } | null; slopeMbPer100kEvents: number | null } {
  const warm = rss.filter((_, i) => rssAt[i]! >= 0.1 * hose.frames).sort((a, b) => a - b);
  const afterWarmup = warm.length ? { min: round1(warm[0]!), median: round1(warm[Math.floor(warm.length / 2)]!), max: round1(warm[warm.length - 1]!), samples: warm.length } : null;
  const xs: number[] = [];
  const ys: number[] = [];
  rss.forEach((mb, i) => {
    if (rssAt[i]! >= 0.5 * hose.frames) (xs.push(rssAt[i]!), ys.push(mb));
  });
  return { afterWarmup, slopeMbPer100kEvents: xs.length >= 3 ? round1(slope(xs, ys) * 100_000) : null };
}

/** The least-squares slope of ys against xs. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

/** CPU milliseconds the run database's backends have used (from /proc: PostgreSQL on this machine), or null. */
async function backendsCpu(): Promise<number | null> {
  const { rows } = await pool.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = current_database()');
  let ms = 0;
  for (const { pid } of rows) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ms += (Number(f[11]) + Number(f[12])) * 10;
    } catch {
      return null; // not this machine's
    }
  }
  return ms;
}

