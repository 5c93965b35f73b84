/**
 * The store path alone, without the network, Temporal or verify in the measured part: changes
 * verified in memory first, then stored with `storeBatch` in batches of B, into a fresh database
 * and a directory blobstore. Prints the CPU per change of this process and of its PostgreSQL
 * backends, which says what a batch's size, and each change to the store path, is worth.
 *
 *   node bench/store-batches.ts --database-url URL [--repos 2000] [--records 10] [--batch 250]
 *   node bench/store-batches.ts --database-url URL --firehose 2000x100 [--limit 60000] [--batch 2000] [--steps]
 *
 * The first form stores N signed small repos (the e2e bench's, cached on disk) as snapshots, as
 * bulk backfill does. `--firehose RxC` stores the live-sync bench's generated firehose (R repos
 * × C signed commits, bench/sync-firehose.ts, cached on disk; generated first when missing) as
 * commits in seq order, as the consumer does under a backlog: each repo's first commit makes it,
 * then every commit adds a record, its MST path and a new head. `--limit` stores only the first N
 * frames. `--steps` adds the PostgreSQL statements' time by step (the store's trace), summed.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { scratchDatabase } from './scratch-db.ts';
import { smallRepos } from '../atproto/testing/static-pds.ts';
import { verifyRepo, type VerifiedRepo } from '../atproto/verify.ts';
import { connectPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { storeBatch } from '../ingest/store.ts';
import type { RepoChange } from '../ingest/changes.ts';
import { decodeFrame } from '../sync/frames.ts';
import { verifyCommitFrame, type CommitFrame } from '../sync/verify-commit.ts';
import { generatedFirehose, readFirehose } from './sync-firehose.ts';

const { values } = parseArgs({
  options: {
    'database-url': { type: 'string' }, repos: { type: 'string', default: '2000' }, records: { type: 'string', default: '10' }, batch: { type: 'string' },
    firehose: { type: 'string' }, limit: { type: 'string' }, steps: { type: 'boolean' },
  },
});
const adminUrl = values['database-url'] ?? process.env.DATABASE_URL;
if (!adminUrl) throw new Error('bench/store-batches.ts needs --database-url or DATABASE_URL');
const log = (l: string) => console.error(l);
const batch = Number(values.batch ?? (values.firehose ? 2000 : 250));
const changes = values.firehose ? await firehoseCommits(values.firehose, values.limit === undefined ? Infinity : Number(values.limit)) : await snapshots();

async function snapshots(): Promise<RepoChange[]> {
  const repos = await smallRepos(Number(values.repos), Number(values.records), log);
  const out: RepoChange[] = [];
  for (const r of repos) {
    const repo: VerifiedRepo = await verifyRepo(Buffer.from(r.car, 'base64'), { did: r.did, signingKey: r.signingKey });
    out.push({ kind: 'snapshot', repo, pds: 'https://bench.invalid', handle: undefined, signingKey: r.signingKey });
  }
  return out;
}

async function firehoseCommits(shape: string, limit: number): Promise<RepoChange[]> {
  const m = /^(\d+)x(\d+)$/.exec(shape);
  if (!m) throw new Error(`--firehose takes REPOSxCOMMITS (e.g. 2000x100), not ${JSON.stringify(shape)}`);
  const hose = await generatedFirehose(Number(m[1]), Number(m[2]), log);
  const frames = readFirehose(hose.file).slice(0, limit);
  const out: RepoChange[] = [];
  for (const f of frames) {
    const frame = decodeFrame(f);
    if (frame.t !== '#commit') throw new Error(`the generated firehose holds a ${frame.t} frame`);
    out.push(await verifyCommitFrame(frame as CommitFrame, hose.signingKey));
  }
  log(`store-batches: ${out.length} commits verified`);
  return out;
}

const db = await scratchDatabase(adminUrl, 'bench_store');
const name = db.name;
const admin = new pg.Client({ connectionString: adminUrl });
await admin.connect();
const pool = await connectPool(db.url);
await migrate(pool);
const blobDir = mkdtempSync(join(tmpdir(), 'repowalk-bench-store-'));
const blobs = new LocalBlobStore(blobDir);
const origin = values.firehose ? ('live' as const) : ('backfill' as const);
const steps = new Map<string, number>();
let stepAt = 0;
const trace = values.steps
  ? (step: string) => {
      const now = performance.now();
      steps.set(step, (steps.get(step) ?? 0) + now - stepAt);
      stepAt = now;
    }
  : undefined;
let seq = 0;
const opts = () => ({
  filter: { keeps: () => true, keepsRepo: () => true, dropsRepos: false },
  origin,
  trace,
  // As the consumer does: the cursor in the batch's transaction.
  cursor: values.firehose ? { key: 'bench/cursor', value: (seq += batch) } : undefined,
});
// The first change alone opens the pool's connection and plans its statements; it is not counted.
stepAt = performance.now();
await storeBatch({ pool, blobs }, changes.slice(0, 1), opts());
steps.clear();

const cpuOf = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
};
const backends = async () => new Map((await admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [name])).rows.map((r) => [r.pid, cpuOf(r.pid)]));
const pg0 = await backends();
const cpu0 = process.cpuUsage();
const t = performance.now();
const outcomes: Record<string, number> = {};
for (let i = 1; i < changes.length; i += batch) {
  stepAt = performance.now();
  const result = await storeBatch({ pool, blobs }, changes.slice(i, i + batch), opts());
  for (const o of result.outcomes) outcomes[o.kind] = (outcomes[o.kind] ?? 0) + 1;
}
const seconds = (performance.now() - t) / 1000;
const cpu = process.cpuUsage(cpu0);
let pgMs = 0;
for (const [pid, ms] of await backends()) pgMs += ms - (pg0.get(pid) ?? 0);
const n = changes.length - 1;
await pool.end();
rmSync(blobDir, { recursive: true, force: true });
await admin.end();
await db.drop();
const perChange = { process: (cpu.user + cpu.system) / 1000 / n, postgres: pgMs / n };
const stepMs = trace ? Object.fromEntries([...steps].map(([k, ms]) => [k, Math.round((ms / n) * 1e4) / 1e4])) : undefined;
console.log(
  JSON.stringify(
    values.firehose
      ? { commits: n, batch, seconds, outcomes, cpuMsPerCommit: perChange, wallMsPerCommitByStep: stepMs }
      : { repos: n, recordsPerRepo: Number(values.records), batch, seconds, outcomes, cpuMsPerRepo: perChange, wallMsPerRepoByStep: stepMs },
  ),
);
