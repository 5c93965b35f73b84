/**
 * End-to-end backfill throughput: N small signed repos through Temporal (bulk `backfill`
 * workflow, `backfillMany` activities, a real worker, PostgreSQL, a directory blobstore).
 *
 * The repos are served by a static loopback server (in a process of its own, so that its CPU is
 * counted apart) that answers `listRepos`, `getRepo` and the
 * PLC's `/<did>` from pre-generated CARs: the reference PDS would spend minutes creating 2,000
 * accounts, and this measures repowalk, not the PDS. Run by bench/run.ts, which passes the stack.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { scratchDatabase } from './scratch-db.ts';
import { Client, Connection } from '@temporalio/client';
import { smallRepos } from '../atproto/testing/static-pds.ts';
import { loadConfig } from '../config/load.ts';
import { runWorker } from '../workers/worker.ts';
import { JOBS } from '../workers/jobs.ts';
import { taskQueueFor } from '../config/task-queues.ts';
import { startWorkerFleet, type WorkerFleet } from '../stack/worker-fleet.ts';
import { backfill, type BackfillProgress } from '../workflows/backfill.ts';
import { pidsCpuMs, threadsCpu } from './thread-cpu.ts';
import { enableTimeline, mark, summarizeTimeline, timelineLength, timelineSince } from '../ingest/timeline.ts';

export interface E2eBench {
  workers: number;
  /** Each repo signed with a key of its own (as on the network), not all with one. */
  keyPerRepo: boolean;
  /** The bulk workflow's input: DIDs per activity (null: the workflow's default), and lanes (repos fetched at once) per activity. */
  pageSize: number | null;
  lanes: number;
  repos: number;
  recordsPerRepo: number;
  /**
   * The passes before the measured one (`warmup`), each over the same repos (with `keyPerRepo`,
   * as many others, signed with other keys) into a mirror emptied after it: the first is the worker's cold start (V8 compiling the hot path as it goes, a
   * cost per process, not per repo); the measured pass runs on a warm worker.
   */
  warmups: E2ePass[];
}

/** One backfill of the static PDS's repos, and its cost. */
export interface E2ePass {
  /** Store batches (one pack and one transaction each) the repos were written in. */
  batches: number;
  seconds: number;
  reposPerSecond: number;
  imported: number;
  failed: number;
  totals: BackfillProgress['totals'];
  /**
   * CPU milliseconds per repo, which hold when the machine is loaded: this process (the worker
   * when `workers` is 1, and the client), the PostgreSQL backends of the bench's database (from
   * the start of the run: the worker's migrations before it are not counted), the Temporal server (null when not found on this machine), and the static PDS (a process of its
   * own, not part of what repowalk costs: it stands for the network's PDSes and the PLC).
   * `total` is the first three: what the mirror spends per repo.
   */
  cpuMsPerRepo: { process: number; postgres: number | null; temporal: number | null; total: number | null; staticPds: number };
  /**
   * This process's CPU milliseconds per repo by thread name (Linux /proc, 10 ms ticks): the main
   * thread (`node`, the worker's JavaScript), V8's helpers, libuv's pool, the Temporal SDK's core
   * (tokio threads) and its workflow thread. Threads under 0.005 ms a repo are left out.
   */
  threadsMsPerRepo: Record<string, number>;
  /** With `timeline` (and one worker, in this process): where the pass's wall time went (ingest/timeline.ts). */
  timeline?: ReturnType<typeof summarizeTimeline>;
  /** With `timeline`: the workflow's own steps, from its history (server clock). */
  temporalMs?: Awaited<ReturnType<typeof temporalSteps>>;
}

export async function benchE2e(opts: { repos: number; records: number; temporalAddress: string; databaseUrl: string; workers?: number; pageSize?: number; lanes?: number; warmup?: number; keyPerRepo?: boolean; timeline?: boolean; log?: (l: string) => void }): Promise<E2eBench> {
  const workers = opts.workers ?? 1;
  const warmup = opts.warmup ?? 0;
  // One activity per 1,000 DIDs: the Temporal server spends tens of milliseconds of CPU on each
  // activity and workflow task, which at 200 a page was 0.4 ms per repo. 0: the workflow's default.
  const pageSize = opts.pageSize === 0 ? null : (opts.pageSize ?? 1000);
  const lanes = opts.lanes ?? 16;
  const log = opts.log ?? ((l: string) => console.error(l));
  const keyPerRepo = opts.keyPerRepo ?? false;
  if (opts.timeline) enableTimeline();
  // With a key per repo, the warm-up passes backfill other repos (other keys): on the same ones,
  // the measured pass would find every key already parsed, which no backfill of the network does.
  // The static PDS then serves both sets, and each pass names its DIDs (a `dids` source).
  const otherRepos = keyPerRepo && warmup > 0;
  const served = otherRepos ? 2 * opts.repos : opts.repos;
  const all = await smallRepos(served, opts.records, log, { keyPerRepo });
  const repos = all.slice(0, opts.repos);
  const pds = await startStaticPds(served, opts.records, keyPerRepo);
  const url = pds.url;
  const sourceOf = (set: typeof repos) => (otherRepos ? { kind: 'dids' as const, dids: set.map((r) => r.did) } : { kind: 'pds' as const, url });
  const db = await scratchDatabase(opts.databaseUrl, 'bench_e2e');
  const dbName = db.name;
  const dbUrl = new URL(db.url);
  const prefix = `bench-${Date.now().toString(36)}`;
  const env = {
    TEMPORAL_ADDRESS: opts.temporalAddress,
    DATABASE_URL: dbUrl.toString(),
    REPOWALK_TASK_QUEUE: prefix,
    REPOWALK_BLOB_DIR: mkdtempSync(join(tmpdir(), 'repowalk-bench-e2e-')),
    REPOWALK_PLC_URL: `${url}/plc`,
    REPOWALK_ALLOW_PRIVATE_ADDRESSES: 'true',
    // The static PDS's handles (*.bench.test) resolve nowhere: checking each costs a failed DNS
    // and HTTPS round (and, with many lanes at once, getaddrinfo's 5 s retry here), not repowalk.
    REPOWALK_VERIFY_HANDLES: 'false',
    REPOWALK_PDS_CONCURRENCY: '16',
    REPOWALK_LOG_LEVEL: 'warn',
  };
  const config = loadConfig({ env });
  const stop = new AbortController();
  let worker: Promise<void> = Promise.resolve();
  let fleet: WorkerFleet | undefined;
  if (workers === 1) {
    let ready!: () => void;
    const isReady = new Promise<void>((r) => (ready = r));
    worker = runWorker({
      config,
      endpoints: { temporalAddress: opts.temporalAddress, namespace: 'default', databaseUrl: dbUrl.toString(), s3: { endpoint: undefined, region: 'us-east-1', accessKeyId: undefined, secretAccessKey: undefined, buckets: [], forcePathStyle: true }, stack: undefined },
      jobs: JOBS.filter((j) => j.name === 'backfill'),
      signal: stop.signal,
      onReady: () => ready(),
    });
    await Promise.race([isReady, worker]);
  } else {
    // Several processes share the job: what a cluster's worker fleet does.
    log(`e2e: starting ${workers} worker processes`);
    fleet = await startWorkerFleet({ count: workers, jobs: ['backfill'], env: { ...env, REPOWALK_STATE_DIR: mkdtempSync(join(tmpdir(), 'repowalk-bench-e2e-state-')) } });
  }
  const client = new Client({ connection: await Connection.connect({ address: opts.temporalAddress }) });
  const temporal = temporalPids(opts.temporalAddress);
  /** One backfill of every repo the static PDS lists, through the worker, and what it cost. */
  const pass = async (workflowId: string, source: ReturnType<typeof sourceOf>): Promise<E2ePass> => {
    const { child } = pds;
    const t = performance.now();
    const cpu0 = process.cpuUsage();
    const threads0 = threadsCpu();
    const temporal0 = cpuOf(temporal);
    const pds0 = cpuOf([child.pid!]);
    const postgres0 = await backendsCpu(opts.databaseUrl, dbName);
    const tl0 = timelineLength();
    mark('run-start');
    // One page more than workers: a worker's next page is already there when its current one runs
    // out of DIDs (see the workflow's pagesInFlight).
    const progress = await client.workflow.execute(backfill, {
      taskQueue: taskQueueFor(config, 'backfill'),
      workflowId,
      args: [{ source, ...(pageSize === null ? {} : { pageSize }), concurrency: lanes, pagesInFlight: workers + 1 }],
    });
    mark('run-end');
    const seconds = (performance.now() - t) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const threads = threadsCpu();
    const temporalMs = temporal.length > 0 ? cpuOf(temporal) - temporal0 : null;
    const pdsMs = cpuOf([child.pid!]) - pds0;
    const postgresMs = backendsCpuSince(postgres0, await backendsCpu(opts.databaseUrl, dbName));
    const batches = await countPacks(dbUrl.toString());
    const processMs = (cpu.user + cpu.system) / 1000;
    const per = (ms: number | null) => (ms === null ? null : Math.round((ms / repos.length) * 100) / 100);
    return {
      batches,
      seconds,
      reposPerSecond: repos.length / seconds,
      imported: progress.totals.imported,
      totals: progress.totals,
      failed: progress.totals.failed,
      cpuMsPerRepo: {
        process: per(processMs)!,
        postgres: per(postgresMs),
        temporal: per(temporalMs),
        total: postgresMs === null || temporalMs === null ? null : per(processMs + postgresMs + temporalMs),
        staticPds: per(pdsMs)!,
      },
      threadsMsPerRepo: Object.fromEntries(
        [...threads]
          .map(([name, ms]) => [name, per(ms - (threads0.get(name) ?? 0))!] as const)
          .filter(([, ms]) => ms >= 0.005)
          .sort((a, b) => b[1] - a[1]),
      ),
      ...(opts.timeline && workers === 1 ? { timeline: summarizeTimeline(timelineSince(tl0), lanes) } : {}),
      ...(opts.timeline ? { temporalMs: await temporalSteps(client, workflowId) } : {}),
    };
  };
  try {
    const warmups: E2ePass[] = [];
    for (let w = 0; w < warmup; w++) {
      log(`e2e: warm-up pass ${w + 1} of ${warmup}: backfilling ${repos.length} repos through Temporal`);
      warmups.push(await pass(`${prefix}/backfill-warmup-${w}`, sourceOf(otherRepos ? all.slice(opts.repos) : repos)));
      if (warmups.at(-1)!.imported !== repos.length) throw new Error(`the warm-up pass imported ${warmups.at(-1)!.imported} of ${repos.length} repos`);
      // Into an empty mirror again: the measured pass does all the work the cold one did.
      await emptyMirror(dbUrl.toString(), env.REPOWALK_BLOB_DIR);
    }
    log(`e2e: backfilling ${repos.length} repos through Temporal`);
    const measured = await pass(`${prefix}/backfill`, sourceOf(repos));
    return { workers, keyPerRepo, pageSize, lanes, repos: repos.length, recordsPerRepo: opts.records, ...measured, warmups };
  } finally {
    await client.connection.close();
    stop.abort();
    await worker.catch(() => {});
    await fleet?.stop();
    pds.child.kill();
    rmSync(env.REPOWALK_BLOB_DIR, { recursive: true, force: true });
    await db.drop().catch((err: unknown) => log(`e2e: could not drop ${dbName}: ${String(err)}`));
  }
}

/** bench/static-pds-main.ts in a process of its own; resolves with its URL once it listens. */
async function startStaticPds(repos: number, records: number, keyPerRepo: boolean): Promise<{ url: string; child: ChildProcess }> {
  const script = fileURLToPath(new URL('./static-pds-main.ts', import.meta.url));
  const child = spawn(process.execPath, [script, '--repos', String(repos), '--records', String(records), ...(keyPerRepo ? ['--key-per-repo'] : [])], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`the static PDS exited (${code}) before it listened`))));
  const line = (async () => {
    for await (const l of createInterface({ input: child.stdout! })) return l;
    throw new Error('the static PDS printed nothing');
  })();
  try {
    const { url } = JSON.parse(await Promise.race([line, exited])) as { url: string };
    return { url, child };
  } catch (err) {
    child.kill();
    throw err;
  }
}

/** CPU milliseconds (user + system) that `pids` have used, from /proc (0 for one that is gone). */
const cpuOf = (pids: number[]): number => pidsCpuMs(pids)!;

/** The Temporal server processes started with this address's port (`temporal server start-dev --port N`). */
function temporalPids(address: string): number[] {
  const port = address.split(':').pop();
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const args = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      const at = args.indexOf('--port');
      if (args.includes('start-dev') && at >= 0 && args[at + 1] === port) out.push(Number(d));
    } catch {
      // gone
    }
  }
  return out;
}

/**
 * Empties the mirror between passes: every table but the migrations' (so the repos are new
 * again), and the directory blobstore (so no pack is found already written).
 */
async function emptyMirror(url: string, blobDir: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const { rows } = await c.query<{ t: string }>(`SELECT quote_ident(tablename) AS t FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '%migration%'`);
    await c.query(`TRUNCATE ${rows.map((r) => r.t).join(', ')} RESTART IDENTITY`);
  } finally {
    await c.end();
  }
  for (const entry of readdirSync(blobDir)) rmSync(join(blobDir, entry), { recursive: true, force: true });
}

/** Packs in the bench's database: one per store batch that added blocks. */
async function countPacks(url: string): Promise<number> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<{ n: number }>('SELECT count(*)::int AS n FROM packs')).rows[0]!.n;
  } finally {
    await c.end();
  }
}

/**
 * CPU milliseconds (by pid) of the backends connected to `db`, or null when PostgreSQL is not on
 * this machine. Read before and after the run: the worker's migrations and first connections,
 * made before, are not the repos' cost; backends that start during the run count whole.
 */
async function backendsCpu(adminUrl: string, db: string): Promise<Map<number, number> | null> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    const { rows } = await admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [db]);
    if (rows.length === 0 || !existsSync(`/proc/${rows[0]!.pid}`)) return null;
    return new Map(rows.map((r) => [r.pid, cpuOf([r.pid])]));
  } finally {
    await admin.end();
  }
}

/** CPU used between two readings of `backendsCpu`. */
function backendsCpuSince(before: Map<number, number> | null, after: Map<number, number> | null): number | null {
  if (after === null) return null;
  let ms = 0;
  for (const [pid, cpu] of after) ms += cpu - (before?.get(pid) ?? 0);
  return ms;
}

/**
 * From a finished workflow's history, in milliseconds: start to first page scheduled; each page's
 * wait from scheduled to started (a worker polling it); each page's completion to the next page
 * scheduled (a workflow task: the turnaround at a page's end); the last completion to the close.
 */
async function temporalSteps(client: Client, workflowId: string) {
  const events = (await client.workflow.getHandle(workflowId).fetchHistory()).events ?? [];
  const ms = (e: (typeof events)[number]) => {
    const t = e.eventTime!;
    return Number(t.seconds ?? 0) * 1000 + Math.round((t.nanos ?? 0) / 1e6);
  };
  const t0 = ms(events[0]!);
  const scheduled = events.filter((e) => e.activityTaskScheduledEventAttributes).map(ms);
  const started = events.filter((e) => e.activityTaskStartedEventAttributes).map(ms);
  const completed = events.filter((e) => e.activityTaskCompletedEventAttributes).map(ms);
  return {
    toFirstPage: (scheduled[0] ?? t0) - t0,
    scheduledToStarted: started.map((t, i) => t - scheduled[i]!),
    // The page scheduled once a page completes (in flight before: scheduled at once).
    completedToNextScheduled: completed.map((t) => (scheduled.find((s) => s >= t) ?? NaN) - t).filter((d) => !Number.isNaN(d)),
    lastCompletedToClose: ms(events.at(-1)!) - (completed.at(-1) ?? t0),
  };
}
