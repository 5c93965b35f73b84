/**
 * Backfill import of one large repo read from disk: verify alone, then verify + diff + store
 * into PostgreSQL and the blobstore (first import into an empty mirror, then a re-import of a
 * newer rev that changes 1 % of the records). Needs a database: DATABASE_URL, or a stack that
 * `bench/run.ts` starts. Prints one JSON object last.
 *
 *   node bench/import.ts [--records 100000] [--database-url URL] [--blob-dir DIR] [--first-only] [--without-index a,b] [--eager-hashes] [--car-in-memory]
 *
 * Memory: the first import reads the CAR itself, streamed from the cached file in 64 KiB chunks
 * as a backfill reads it from the network (`--car-in-memory`: verified from the whole CAR read
 * before, as until now, which leaves the CAR's own bytes out of the figure). Its baseline is the
 * process's RSS just before, after a full collection, with the RSS high-water mark reset there
 * (`/proc/self/clear_refs`), so the peak is the import's own and not what loading the bench's
 * inputs left behind; `peakRssOverCar` and `aboveBaselineOverCar` are against that baseline.
 * Part of that peak does not grow with the repo: V8's young generation (by default its two
 * semi-spaces grow to 16 MB each and past that, 32 to 128 MB in all here; the collection at the
 * baseline leaves most of their pages released, and the import touches them again) and the
 * array buffers that die between its collections (COPY's chunks).
 * A worker runs with `--max-semi-space-size=4` (scripts/env.sh, REPOWALK_NODE_FLAGS), and
 * `npm run bench` runs this bench with it; run directly, `node --max-semi-space-size=4
 * bench/import.ts …` does the same (`nodeFlags` in the output says what it ran with).
 *
 * `--first-only` skips the re-import (the growth bench measures first imports at several sizes).
 * `--without-index` drops those indexes from the bench's fresh database before importing: what
 * each index costs the import (events_cid, events_did_id, records_cid, blocks_pack_id, …).
 * The imports verify with `deferBlockHashes`, as a backfill of one large repo does: the blocks'
 * hashes are checked while the store path waits for the database (their wait shows in the
 * `await pack upload` step); `--eager-hashes` checks them inside verify instead, as before.
 */
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { closeSync, createReadStream, existsSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as TID from '@atcute/tid';
import pg from 'pg';
import { type MadeRepo, cachePaths, makeRepo, generateRecords } from '../atproto/testing/make-repo.ts';
import { BENCH_DID, benchRepo } from './inputs.ts';
import { verifyRepo, verifyRepoStream } from '../atproto/verify.ts';
import { connectPool } from '../storage/db/pool.ts';
import { scratchDatabase } from './scratch-db.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { importRepo } from '../backfill/import.ts';
import { FilterOptions } from '../backfill/filters.ts';
import { pidsCpuMs } from './thread-cpu.ts';

export interface ImportBench {
  records: number;
  /** Indexes dropped before the import (`--without-index`), when any. */
  withoutIndexes?: string[];
  carBytes: number;
  verify: { seconds: number; recordsPerSecond: number; mbPerSecond: number };
  firstImport: {
    seconds: number;
    recordsPerSecond: number;
    mbPerSecond: number;
    msByStep: Record<string, number>;
    /** CPU per step: this process, and the PostgreSQL backend that ran the transaction (when it runs on this machine). */
    cpuMsByStep: Record<string, { worker: number; postgres: number | null }>;
    /**
     * Memory at the end of each step, MB: RSS, V8's heap in use, and the array buffers (the
     * CAR, the pack) outside it. A step's transient peak can be higher: `peakRss` is the
     * process's high-water mark at the step's end (where /proc has it), so the first step whose
     * `peakRss` reaches `peakRssMb` is the one that set the import's peak.
     */
    memoryMbByStep: Record<string, MemoryMb>;
    /** CPU of the whole import (verify included), which holds when the machine is loaded. */
    cpuSeconds: { worker: number; postgres: number | null };
  };
  reimport1pct?: { seconds: number; recordsPerSecond: number; created: number; updated: number; deleted: number; cpuSeconds: { worker: number; postgres: number | null } };
  /** RSS just before the first import (Node, modules, the bench's inputs; the CAR too with `--car-in-memory`). */
  baselineRssMb: number;
  /** Peak RSS through the first import (verify + store). */
  peakRssMb: number;
  peakRssOverCar: number;
  aboveBaselineOverCar: number;
  /** Whether the first import read the CAR itself (streamed from its file) rather than held it before the baseline. */
  carStreamed: boolean;
  /** Whether the high-water mark was reset at the baseline; when not, the peak is the process's since it started. */
  peakResetAtBaseline: boolean;
  /**
   * Node's flags for this process (`--max-semi-space-size=4`, say): V8's young generation, whose
   * pages the import touches whatever it holds, is up to 32 MB of the peak by default.
   */
  nodeFlags: string[];
  /** With `keepDatabase`: the database the import filled, left for the caller to read and drop. */
  kept?: { url: string; drop: () => Promise<void> };
}

export async function benchImport(opts: {
  records: number;
  databaseUrl: string;
  blobDir?: string;
  firstOnly?: boolean;
  withoutIndexes?: string[];
  eagerHashes?: boolean;
  carInMemory?: boolean;
  /** Leave the database the import made (its URL and a drop in `kept`) instead of dropping it. */
  keepDatabase?: boolean;
  log?: (l: string) => void;
}): Promise<ImportBench> {
  const log = opts.log ?? ((l: string) => console.error(l));
  log(`import: preparing a signed ${opts.records}-record repo (cached after the first run)`);
  const carStreamed = !opts.carInMemory;
  const { carPath, metaPath } = cachePaths({ did: BENCH_DID, records: opts.records });
  // Streamed, the first import is the first thing in the process to hold the CAR: loading it
  // before, even to let it go, would leave its pages to the allocator for the import to reuse.
  let made: MadeRepo | undefined = carStreamed && existsSync(carPath) && existsSync(metaPath) ? undefined : await benchRepo(opts.records);
  const { did, signingKey } = made ?? identityOf(metaPath);
  const carBytes = statSync(carPath).size;
  const mb = carBytes / 1e6;
  // Two connections, both opened before the import, so that the backends whose CPU is read are
  // the ones that run it: the import's transaction, and the indexed-blocks check that a large
  // import runs beside it (ingest/store.ts, OVERLAP_ROWS), as a worker's pool gives it.
  const db = await scratchDatabase(opts.databaseUrl, 'bench_import');
  const pool = await connectPool(db.url, { max: 2 });
  await migrate(pool);
  for (const index of opts.withoutIndexes ?? []) {
    if (!/^[a-z_][a-z0-9_]*$/.test(index)) throw new Error(`--without-index: ${JSON.stringify(index)} is not an index name`);
    const { rowCount } = await pool.query('SELECT 1 FROM pg_indexes WHERE indexname = $1', [index]);
    if (rowCount === 0) throw new Error(`--without-index: no index ${index}`);
    // A primary key's index goes with its constraint.
    const pk = await pool.query<{ table: string }>(`SELECT conrelid::regclass::text AS table FROM pg_constraint WHERE conname = $1`, [index]);
    await pool.query(pk.rows[0] ? `ALTER TABLE ${pk.rows[0].table} DROP CONSTRAINT ${index}` : `DROP INDEX ${index}`);
  }
  const pgCpu = await backendCpu(pool);
  // A directory of its own unless one is given, removed at the end (the packs are not needed past the run).
  const ownBlobDir = opts.blobDir ? undefined : mkdtempSync(join(tmpdir(), 'repowalk-bench-'));
  const blobs = new LocalBlobStore(opts.blobDir ?? ownBlobDir!);
  const filter = FilterOptions.parse({});

  let verifyS = 0;
  const verifyAlone = async (car: Uint8Array) => {
    const start = performance.now();
    await verifyRepo(car, { did, signingKey });
    verifyS = (performance.now() - start) / 1000;
    log(`import: verify alone ${verifyS.toFixed(2)} s`);
  };
  if (!carStreamed) await verifyAlone(made!.car);

  // What came before is garbage: collected now, so the import's peak does not stack on it.
  collectGarbage();
  const peakResetAtBaseline = resetPeakRss();
  // maxRSS is a high-water mark in KiB: without the reset it holds what loading the inputs took.
  const baselineMb = peakResetAtBaseline ? process.memoryUsage().rss / 2 ** 20 : process.resourceUsage().maxRSS / 1024;
  let t = performance.now();
  t = performance.now();
  const steps: Record<string, number> = {};
  const cpuSteps: Record<string, { worker: number; postgres: number | null }> = {};
  const memSteps: ImportBench['firstImport']['memoryMbByStep'] = { before: memoryMb() };
  let last = t;
  const cpu0 = { worker: workerCpuMs(), postgres: pgCpu() };
  let lastCpu = cpu0;
  const trace = (step: string) => {
    const now = performance.now();
    const cpu = { worker: workerCpuMs(), postgres: pgCpu() };
    steps[step] = Math.round(now - last);
    cpuSteps[step] = { worker: Math.round(cpu.worker - lastCpu.worker), postgres: cpu.postgres === null ? null : cpu.postgres - lastCpu.postgres! };
    memSteps[step] = memoryMb();
    last = now;
    lastCpu = cpu;
  };
  const deferBlockHashes = !opts.eagerHashes;
  const verifyOptions = { did, signingKey, deferBlockHashes };
  const repo = carStreamed
    ? await verifyRepoStream(createReadStream(carPath, { highWaterMark: 64 * 1024 }), verifyOptions)
    : await verifyRepo(made!.car, verifyOptions);
  trace('verify');
  const first = await importRepo({ pool, blobs }, { repo, pds: 'https://bench.invalid', handle: undefined, signingKey, filter, trace });
  const firstS = (performance.now() - t) / 1000;
  const firstCpu = cpuSince(cpu0, pgCpu);
  if (first.kind !== 'imported') throw new Error(`first import: ${first.kind}`);
  const peakFirstMb = process.resourceUsage().maxRSS / 1024;
  log(`import: verify+diff+store ${firstS.toFixed(2)} s; ms by step: ${JSON.stringify(steps)}`);
  log(`import: CPU ${JSON.stringify(firstCpu)} s; by step: ${JSON.stringify(cpuSteps)}`);
  log(`import: memory (MB) by step: ${JSON.stringify(memSteps)}`);
  made ??= await benchRepo(opts.records);
  if (carStreamed) await verifyAlone(made.car);

  const reimport1pct = opts.firstOnly ? undefined : await benchReimport(pool, blobs, made, opts.records, pgCpu, deferBlockHashes);
  await pool.end();
  if (!opts.keepDatabase) await db.drop();
  if (ownBlobDir) rmSync(ownBlobDir, { recursive: true, force: true });
  return {
    records: opts.records,
    ...(opts.withoutIndexes?.length ? { withoutIndexes: opts.withoutIndexes } : {}),
    carBytes,
    verify: { seconds: verifyS, recordsPerSecond: opts.records / verifyS, mbPerSecond: mb / verifyS },
    firstImport: { seconds: firstS, recordsPerSecond: opts.records / firstS, mbPerSecond: mb / firstS, msByStep: steps, cpuMsByStep: cpuSteps, memoryMbByStep: memSteps, cpuSeconds: firstCpu },
    ...(reimport1pct ? { reimport1pct } : {}),
    baselineRssMb: baselineMb,
    peakRssMb: peakFirstMb,
    peakRssOverCar: (peakFirstMb * 1024 * 1024) / carBytes,
    aboveBaselineOverCar: ((peakFirstMb - baselineMb) * 1024 * 1024) / carBytes,
    carStreamed,
    peakResetAtBaseline,
    nodeFlags: [...process.execArgv, ...(process.env.NODE_OPTIONS ? [process.env.NODE_OPTIONS] : [])],
    ...(opts.keepDatabase ? { kept: { url: db.url, drop: db.drop } } : {}),
  };
}

/** A newer rev with 1 % of records changed: what a periodic re-backfill costs. */
async function benchReimport(pool: pg.Pool, blobs: LocalBlobStore, made: MadeRepo, records: number, pgCpu: () => number | null, deferBlockHashes: boolean): Promise<NonNullable<ImportBench['reimport1pct']>> {
  const filter = FilterOptions.parse({});
  const base = generateRecords(records);
  const n = Math.max(3, Math.floor(records / 100));
  const changed = [
    ...base.slice(n / 3).map((r, i) => (i < n / 3 ? { ...r, value: { ...r.value, text: `edit ${i}` } } : r)),
    ...generateRecords(records + Math.floor(n / 3)).slice(records),
  ];
  const next = await makeRepo({ did: made.did, records: changed, keypair: made.keypair, rev: TID.now() });
  // Building the new rev with the reference implementation leaves much garbage; collected now,
  // it is not counted as the re-import's CPU.
  collectGarbage();
  const t = performance.now();
  const cpu0 = { worker: workerCpuMs(), postgres: pgCpu() };
  const repo2 = await verifyRepo(next.car, { did: next.did, signingKey: next.signingKey, deferBlockHashes });
  const second = await importRepo({ pool, blobs }, { repo: repo2, pds: 'https://bench.invalid', handle: undefined, signingKey: made.signingKey, filter });
  const secondS = (performance.now() - t) / 1000;
  const cpuSeconds = cpuSince(cpu0, pgCpu);
  if (second.kind !== 'imported') throw new Error(`re-import: ${second.kind}`);
  return { seconds: secondS, recordsPerSecond: changed.length / secondS, created: second.created, updated: second.updated, deleted: second.deleted, cpuSeconds };
}

/**
 * The DID and signing key from a cached repo's JSON (`makeRepoCached` writes them first), read
 * from its head: the whole file (its record list, 171 MB at 1,000,000 records) would leave a
 * heap that size behind before the baseline.
 */
function identityOf(metaPath: string): { did: string; signingKey: string } {
  const fd = openSync(metaPath, 'r');
  const head = Buffer.alloc(4096);
  const n = readSync(fd, head, 0, head.length, 0);
  closeSync(fd);
  const text = head.toString('utf8', 0, n);
  const did = /^\{"did":"([^"]+)","signingKey":"([^"]+)"/.exec(text);
  if (did) return { did: did[1]!, signingKey: did[2]! };
  return JSON.parse(readFileSync(metaPath, 'utf8')) as { did: string; signingKey: string };
}

/**
 * Resets the process's RSS high-water mark (what `maxRSS` reports) to its RSS now (Linux 4.0+:
 * `/proc/self/clear_refs`). False where that cannot be done; `maxRSS` then keeps its earlier peak.
 */
function resetPeakRss(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/** A full collection now (V8's `gc`, reached without the command-line flag). */
function collectGarbage(): void {
  v8.setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

/** RSS; V8's heap, reserved and in use; array buffers (the CAR, packs) outside it. */
interface MemoryMb {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  arrayBuffers: number;
  /** The RSS high-water mark so far (since the baseline): the step whose value first reaches `peakRssMb` holds the peak. */
  peakRss?: number;
}

function memoryMb(): MemoryMb {
  const m = process.memoryUsage();
  const mb = (n: number) => Math.round(n / 2 ** 20);
  const out: MemoryMb = { rss: mb(m.rss), heapTotal: mb(m.heapTotal), heapUsed: mb(m.heapUsed), arrayBuffers: mb(m.arrayBuffers) };
  const peak = peakRssMb();
  if (peak !== undefined) out.peakRss = Math.round(peak);
  return out;
}

/** The process's RSS high-water mark, MB (`VmHWM`: since the reset at the baseline), where /proc has it. */
function peakRssMb(): number | undefined {
  try {
    const m = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

function workerCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

function cpuSince(from: { worker: number; postgres: number | null }, pgCpu: () => number | null): { worker: number; postgres: number | null } {
  const pgNow = pgCpu();
  return { worker: (workerCpuMs() - from.worker) / 1000, postgres: pgNow === null || from.postgres === null ? null : (pgNow - from.postgres) / 1000 };
}

/**
 * The CPU milliseconds the pool's one backend has used (from /proc, when PostgreSQL runs on
 * this machine, as under bench/run.ts), or a function that answers null.
 */
/** CPU milliseconds of the backends of every connection the pool may open (all opened now, and kept: the pool's idle timeout is 30 s). */
async function backendCpu(pool: pg.Pool): Promise<() => number | null> {
  const max = (pool as unknown as { options: { max: number } }).options.max;
  const clients = await Promise.all(Array.from({ length: max }, () => pool.connect()));
  const pids = await Promise.all(clients.map(async (c) => (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid));
  for (const c of clients) c.release();
  return () => pidsCpuMs(pids, true);
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      records: { type: 'string', default: '100000' },
      'database-url': { type: 'string' },
      'blob-dir': { type: 'string' },
      'first-only': { type: 'boolean' },
      'without-index': { type: 'string' },
      'eager-hashes': { type: 'boolean' },
      'car-in-memory': { type: 'boolean' },
    },
  });
  const url = values['database-url'] ?? process.env.DATABASE_URL;
  if (!url) throw new Error('bench/import.ts needs --database-url or DATABASE_URL (bench/run.ts starts a stack and passes one)');
  const result = await benchImport({ records: Number(values.records), databaseUrl: url, blobDir: values['blob-dir'], firstOnly: values['first-only'], withoutIndexes: values['without-index']?.split(',').filter(Boolean), eagerHashes: values['eager-hashes'], carInMemory: values['car-in-memory'] });
  console.log(JSON.stringify(result));
}
