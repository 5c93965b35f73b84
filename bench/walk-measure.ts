/**
 * One measured walk, as the walk and growth benches take it: nodes/s, and CPU per node of this
 * process (all threads, and the walk's own thread) and of PostgreSQL's processes, so a walk's
 * whole cost shows whatever else the machine runs.
 */
import { readFileSync, readdirSync } from 'node:fs';
import type pg from 'pg';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { type RunOptions, runWalk, type WalkSpec } from '../graph/run.ts';
import { formatFindings } from '../graph/progress.ts';
import type { Node } from '../graph/nodes.ts';
import { threadsCpu } from './thread-cpu.ts';

/**
 * A process's parent, its CPU ticks (user + system), and the ticks of its children it has reaped
 * (`cutime + cstime`), from /proc; undefined when it is gone.
 */
export function procStat(pid: number): { ppid: number; ticks: number; reapedTicks: number } | undefined {
  try {
    // The fields after the command name, which may itself hold spaces and parentheses.
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = text.slice(text.lastIndexOf(') ') + 2).split(' ');
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]), reapedTicks: Number(f[13]) + Number(f[14]) };
  } catch {
    return undefined;
  }
}

/**
 * PostgreSQL's CPU in ticks: its live server processes (the postmaster's children) and those that
 * exited, whose CPU the kernel adds to the postmaster's reaped ticks when it waits for them. A
 * connection closed during a walk (a pool's idle client, a parallel worker) keeps its CPU in the
 * figure this way; counting live children alone lost it.
 */
export function postgresTicks(postmaster: number): number {
  let ticks = procStat(postmaster)?.reapedTicks ?? 0;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const st = procStat(Number(d));
    if (st && st.ppid === postmaster) ticks += st.ticks;
  }
  return ticks;
}

/**
 * A meter of PostgreSQL's CPU in µs (10 ms ticks): see `postgresTicks`. The Repo reads' joins run
 * there, so a walk's cost per node shows whole.
 */
export async function postgresCpuMeter(pool: pg.Pool): Promise<() => number> {
  const { rows: [me] } = await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  const postmaster = procStat(me!.pid)?.ppid;
  if (postmaster === undefined) throw new Error(`PostgreSQL backend ${me!.pid} is not a local process: its CPU cannot be read from /proc`);
  return () => postgresTicks(postmaster) * (1_000_000 / 100);
}

export interface MeasuredWalk {
  r: Awaited<ReturnType<typeof runWalk>>;
  type: string;
  cpuUs: number;
  mainCpuUs: number;
  pgUs: number;
  /** CPU of this process's threads by name (Linux, 10 ms ticks), microseconds. */
  threadsUs: Record<string, number>;
  rssBefore: number;
  rssPeak: number;
}

export async function measureWalk(
  deps: { pool: pg.Pool; store: BlobStore },
  spec: WalkSpec,
  roots: Node[],
  opts: { label: string; emit: (line: string) => void; pgCpuUs: () => number; run?: Omit<RunOptions, 'progress'> },
): Promise<MeasuredWalk> {
  const rssBefore = process.memoryUsage.rss();
  let rssPeak = rssBefore;
  const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage.rss())), 100);
  // PostgreSQL's meter reads /proc for every process on the machine: read outside this process's window.
  const pg0 = opts.pgCpuUs();
  const cpu0 = process.cpuUsage();
  const main0 = process.threadCpuUsage();
  const threads0 = threadsCpu();
  const r = await runWalk(deps, spec, roots, { ...opts.run, progress: { label: opts.label, emit: opts.emit } });
  const cpu = process.cpuUsage(cpu0);
  const main = process.threadCpuUsage(main0);
  const threads = threadsCpu();
  const threadsUs: Record<string, number> = {};
  for (const [name, ms] of threads) threadsUs[name] = (ms - (threads0.get(name) ?? 0)) * 1000;
  const pgUs = opts.pgCpuUs() - pg0;
  clearInterval(sampler);
  return { r, type: spec.type, cpuUs: cpu.user + cpu.system, mainCpuUs: main.user + main.system, pgUs, threadsUs, rssBefore, rssPeak: Math.max(rssPeak, process.memoryUsage.rss()) };
}

const round2 = (n: number) => Math.round(n * 100) / 100;

/** The figures of a run measured `tries.length` times: the median try's (by nodes/s), and each try's rate. */
export function walkFigures(tries: MeasuredWalk[]) {
  const rate = (t: MeasuredWalk) => t.r.totals.nodes / (t.r.elapsedMs / 1000);
  const sorted = [...tries].sort((a, b) => rate(a) - rate(b));
  const median = sorted[Math.floor(sorted.length / 2)]!;
  const { r, type } = median;
  return {
    nodes: r.totals.nodes,
    seconds: Math.round(r.elapsedMs) / 1000,
    nodesPerSecond: Math.round(rate(median)),
    nodesPerSecondEachTry: tries.map((t) => Math.round(rate(t))),
    reposPerSecond: Math.round(r.totals.roots / (r.elapsedMs / 1000)),
    blockBytesPerSecond: Math.round(r.totals.bytes / (r.elapsedMs / 1000)),
    // This process's CPU (user + system) per node: the walk's own cost, whatever else the
    // machine runs (PostgreSQL, the S3 server and other work share its cores).
    cpuMicrosecondsPerNode: round2(median.cpuUs / r.totals.nodes),
    // The walk's own thread alone (the rest is V8's GC helpers, libuv's pool and the signature worker).
    mainThreadCpuMicrosecondsPerNode: round2(median.mainCpuUs / r.totals.nodes),
    // PostgreSQL's processes (10 ms ticks), per node: with this process's, the walk's whole CPU.
    postgresCpuMicrosecondsPerNode: round2(median.pgUs / r.totals.nodes),
    // The least of each over the tries: on a machine others share, what a walk costs when it is
    // least disturbed (more stable from run to run than the median try's).
    leastCpuMicrosecondsPerNode: {
      process: round2(Math.min(...tries.map((t) => t.cpuUs)) / r.totals.nodes),
      mainThread: round2(Math.min(...tries.map((t) => t.mainCpuUs)) / r.totals.nodes),
      postgres: round2(Math.min(...tries.map((t) => t.pgUs)) / r.totals.nodes),
    },
    // The median try's CPU per node by thread name (Linux's 10 ms ticks): the walk's thread
    // (`node`), V8's collector helpers, the signature worker, libuv's pool.
    cpuMicrosecondsPerNodeByThread: Object.fromEntries(
      Object.entries(median.threadsUs).filter(([, us]) => us > 0).map(([name, us]) => [name, round2(us / r.totals.nodes)]),
    ),
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
