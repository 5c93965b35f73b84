/**
 * One step on one mirror of the growth bench, in a process of its own so its peak RSS is its own:
 *
 *   build: a fresh database (migrated) and directory blobstore filled with `--repos` signed repos
 *     of `--records` records (one repo: the verify and import benches' cached repo; more: the
 *     cached many-small set, `manySmallRepos`), verified and stored through the store path the
 *     bulk backfill runs (`storeBatch`, `--batch` repos a batch; no network, no Temporal).
 *   walk:  validate and scrub of every repo (`bench/walk-measure.ts`; an unreported validate
 *     first unless `--no-warmup`, then `--repeat` tries, the median reported).
 *   gc:    one garbage collection run (`collectGarbage`: mark every repo, then sweep, blobs and
 *     orphans; nothing is garbage, so it is the cost of proving that; every repo was stored within
 *     the re-mark margin, so each is marked twice, as after a backfill).
 *
 *   node bench/growth-mirror.ts --step build --admin-url URL --database NAME --blobs DIR --repos N --records M [--batch 250]
 *   node bench/growth-mirror.ts --step walk|gc --admin-url URL --database NAME --blobs DIR --repos N --records M
 *     [--repo-read auto|scan|lookup]   (walk: how a batch of repos is read, `RepoBatchOptions.plan`)
 *     [--prefetch-share F]   (walk: `RepoBatchOptions.prefetchShare`; above 1, no pack is read whole,
 *       so every block is looked up as a live-synced mirror's are when its packs hold many repos)
 *
 * Prints one JSON object last: the step's figures, CPU of this process and of PostgreSQL's
 * processes, and this process's peak RSS.
 */
import { parseArgs } from 'node:util';
import pg from 'pg';
import { connectPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { storeBatch } from '../ingest/store.ts';
import type { SnapshotChange } from '../ingest/changes.ts';
import { verifyRepo } from '../atproto/verify.ts';
import { collectGarbage } from '../maintenance/gc.ts';
import type { Node } from '../graph/nodes.ts';
import type { WalkSpec } from '../graph/run.ts';
import { BENCH_DID, benchRepo, manySmallRepoDids, manySmallRepos } from './inputs.ts';
import { type MeasuredWalk, measureWalk, postgresCpuMeter, walkFigures } from './walk-measure.ts';

const { values } = parseArgs({
  options: {
    step: { type: 'string' },
    'admin-url': { type: 'string' },
    database: { type: 'string' },
    blobs: { type: 'string' },
    repos: { type: 'string' },
    records: { type: 'string' },
    batch: { type: 'string', default: '250' },
    repeat: { type: 'string', default: '1' },
    'no-warmup': { type: 'boolean', default: false },
    /** How the walk reads a batch of repos (`RepoBatchOptions.plan`): auto, scan or lookup. */
    'repo-read': { type: 'string', default: 'auto' },
    'prefetch-share': { type: 'string' },
  },
});
const log = (line: string) => process.stderr.write(`${line}\n`);
const need = (name: keyof typeof values) => {
  const v = values[name];
  if (typeof v !== 'string' || v === '') throw new Error(`bench/growth-mirror.ts needs --${name}`);
  return v;
};
const step = need('step');
if (!['build', 'walk', 'gc'].includes(step)) throw new Error(`unknown --step ${JSON.stringify(step)}; known: build, walk, gc`);
const database = need('database');
if (!/^[a-z_][a-z0-9_]*$/.test(database)) throw new Error(`--database ${JSON.stringify(database)} is not a plain lower-case identifier`);
const repos = Number(need('repos'));
const records = Number(need('records'));
if (!(Number.isInteger(repos) && repos >= 1 && Number.isInteger(records) && records >= 1)) throw new Error('--repos and --records must be whole numbers ≥ 1');
const adminUrl = need('admin-url');
const repoRead = values['repo-read'];
if (repoRead !== 'auto' && repoRead !== 'scan' && repoRead !== 'lookup') throw new Error(`unknown --repo-read ${JSON.stringify(repoRead)}; known: auto, scan, lookup`);
const prefetchShare = values['prefetch-share'] === undefined ? undefined : Number(values['prefetch-share']);
if (prefetchShare !== undefined && !(prefetchShare > 0)) throw new Error(`--prefetch-share ${JSON.stringify(values['prefetch-share'])}: a share above 0`);
const blobs = new LocalBlobStore(need('blobs'));
const url = new URL(adminUrl);
url.pathname = `/${database}`;
const label = `${repos} × ${records}`;

const dids = async (): Promise<string[]> => (repos === 1 ? [BENCH_DID] : await manySmallRepoDids(repos, records, log));
const ms = (us: number) => Math.round(us / 100) / 10;
const rssMB = () => Math.round((process.resourceUsage().maxRSS * 1024) / 2 ** 20);

let result: Record<string, unknown>;
if (step === 'build') {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${database}`);
  await admin.end();
  const pool = await connectPool(url.toString(), { max: 8 });
  await migrate(pool);
  // The inputs, read from the cache (made the first time): not counted.
  const inputs: { did: string; car: Uint8Array; signingKey: string }[] = [];
  if (repos === 1) {
    const made = await benchRepo(records);
    inputs.push({ did: BENCH_DID, car: made.car, signingKey: made.signingKey });
  } else {
    const set = await manySmallRepos(repos, records, log);
    for (let i = 0; i < repos; i++) inputs.push({ did: set.dids[i]!, car: set.cars[i]!, signingKey: set.signingKey });
  }
  const inputsRssMB = Math.round(process.memoryUsage.rss() / 2 ** 20);
  const pgCpuUs = await postgresCpuMeter(pool);
  const batch = Number(values.batch);
  const opts = { filter: { keeps: () => true, keepsRepo: () => true, dropsRepos: false }, origin: 'backfill' as const };
  const pg0 = pgCpuUs();
  const cpu0 = process.cpuUsage();
  const started = performance.now();
  let verifyUs = 0;
  let stored = 0;
  for (let i = 0; i < inputs.length; i += batch) {
    const v0 = process.cpuUsage();
    const changes: SnapshotChange[] = [];
    for (const r of inputs.slice(i, i + batch)) {
      const repo = await verifyRepo(r.car, { did: r.did, signingKey: r.signingKey });
      changes.push({ kind: 'snapshot', repo, pds: 'https://bench.invalid', handle: undefined, signingKey: r.signingKey });
    }
    const v = process.cpuUsage(v0);
    verifyUs += v.user + v.system;
    await storeBatch({ pool, blobs }, changes, opts);
    stored += changes.length;
    if (inputs.length > 1000 && (i / batch) % 40 === 39) log(`growth ${label}: stored ${stored} of ${inputs.length} repos`);
  }
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const pgUs = pgCpuUs() - pg0;
  await pool.query('ANALYZE');
  const { rows: [counts] } = await pool.query<{ blocks: string; bytes: string; packs: string; records: string }>(
    'SELECT (SELECT count(*) FROM blocks) AS blocks, (SELECT coalesce(sum(byte_length), 0) FROM blocks) AS bytes, (SELECT count(*) FROM packs) AS packs, (SELECT count(*) FROM records) AS records',
  );
  await pool.end();
  const n = Number(counts!.records);
  if (n !== repos * records) throw new Error(`growth ${label}: ${n} records stored, expected ${repos * records}`);
  result = {
    seconds: Math.round(seconds * 100) / 100,
    recordsPerSecond: Math.round(n / seconds),
    reposPerSecond: Math.round(repos / seconds),
    cpuMsProcess: ms(cpu.user + cpu.system),
    cpuMsVerify: ms(verifyUs),
    cpuMsPostgres: ms(pgUs),
    cpuMicrosecondsPerRecord: { process: Math.round(((cpu.user + cpu.system) / n) * 100) / 100, postgres: Math.round((pgUs / n) * 100) / 100 },
    blocks: Number(counts!.blocks),
    blockBytes: Number(counts!.bytes),
    packs: Number(counts!.packs),
    batch,
    inputsRssMB,
  };
} else {
  const pool = await connectPool(url.toString(), { max: 8 });
  const pgCpuUs = await postgresCpuMeter(pool);
  const roots: Node[] = (await dids()).map((did) => ({ type: 'Repo', did }));
  if (step === 'walk') {
    const specs: Record<string, WalkSpec> = { validate: { type: 'validate' }, scrub: { type: 'scrub', scrub: { graceSeconds: 0 } } };
    const walk = (name: string) => measureWalk({ pool, store: blobs }, specs[name]!, roots, { label: `growth ${label} ${name}`, emit: log, pgCpuUs, run: { repoBatch: { plan: repoRead, ...(prefetchShare === undefined ? {} : { prefetchShare }) } } });
    // One unreported run first: V8 compiles the hot paths during the first walk.
    if (!values['no-warmup']) await walk('validate');
    result = {};
    for (const name of ['validate', 'scrub']) {
      const tries: MeasuredWalk[] = [];
      for (let i = 0; i < Number(values.repeat); i++) tries.push(await walk(name));
      const f = walkFigures(tries);
      if (f.findings !== 'none') throw new Error(`growth ${label} ${name}: findings on a mirror that should have none: ${f.findings}`);
      result[name] = f;
    }
  } else {
    const pg0 = pgCpuUs();
    const cpu0 = process.cpuUsage();
    const started = performance.now();
    const report = await collectGarbage({ pool, blobs }, { graceSeconds: 0, repackBelow: 0 });
    const seconds = (performance.now() - started) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const pgUs = pgCpuUs() - pg0;
    if (!report.mark.complete || report.sweep.packs > 0) throw new Error(`growth ${label} gc: mark complete ${report.mark.complete}, ${report.sweep.packs} packs swept on a mirror with no garbage`);
    const nodes = report.mark.blockNodes;
    result = {
      seconds: Math.round(seconds * 1000) / 1000,
      // Block nodes (commits, MST nodes, records) marked, repeats included: a repo whose row
      // changed within `remarkMarginSeconds` (900) of the mark is marked again, and a mirror
      // built just before is all such repos, so this is twice its blocks.
      markedNodes: nodes,
      remarkedRepos: report.mark.remarkedRepos,
      nodesPerSecond: Math.round(nodes / seconds),
      cpuMsProcess: ms(cpu.user + cpu.system),
      cpuMsPostgres: ms(pgUs),
      cpuMicrosecondsPerNode: { process: Math.round(((cpu.user + cpu.system) / nodes) * 100) / 100, postgres: Math.round((pgUs / nodes) * 100) / 100 },
    };
  }
  await pool.end();
}
console.log(JSON.stringify({ step, repos, records, ...result, peakRssMB: rssMB() }));
