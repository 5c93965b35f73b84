/**
 * The store path alone, for many small repos: N signed repos (the e2e bench's, cached on disk)
 * verified in memory first, then stored with `storeBatch` in batches of B, into a fresh database
 * and a directory blobstore. Prints the CPU per repo of this process and of its PostgreSQL
 * backends, which says what a batch's size is worth without the network, Temporal or verify.
 *
 *   node bench/store-batches.ts --database-url URL [--repos 2000] [--records 10] [--batch 250]
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { smallRepos } from '../atproto/testing/static-pds.ts';
import { verifyRepo, type VerifiedRepo } from '../atproto/verify.ts';
import { connectPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { storeBatch } from '../ingest/store.ts';
import type { SnapshotChange } from '../ingest/changes.ts';

const { values } = parseArgs({ options: { 'database-url': { type: 'string' }, repos: { type: 'string', default: '2000' }, records: { type: 'string', default: '10' }, batch: { type: 'string', default: '250' } } });
const adminUrl = values['database-url'] ?? process.env.DATABASE_URL;
if (!adminUrl) throw new Error('bench/store-batches.ts needs --database-url or DATABASE_URL');
const batch = Number(values.batch);
const repos = await smallRepos(Number(values.repos), Number(values.records), (l) => console.error(l));
const changes: SnapshotChange[] = [];
for (const r of repos) {
  const repo: VerifiedRepo = await verifyRepo(Buffer.from(r.car, 'base64'), { did: r.did, signingKey: r.signingKey });
  changes.push({ kind: 'snapshot', repo, pds: 'https://bench.invalid', handle: undefined, signingKey: r.signingKey });
}

const name = `bench_store_${Date.now().toString(36)}`;
const admin = new pg.Client({ connectionString: adminUrl });
await admin.connect();
await admin.query(`CREATE DATABASE ${name}`);
const url = new URL(adminUrl);
url.pathname = `/${name}`;
const pool = await connectPool(url.toString());
await migrate(pool);
const blobs = new LocalBlobStore(mkdtempSync(join(tmpdir(), 'repowalk-bench-store-')));
const opts = { filter: { keeps: () => true, keepsRepo: () => true, dropsRepos: false }, origin: 'backfill' as const };
// The first repo alone opens the pool's connection and plans its statements; it is not counted.
await storeBatch({ pool, blobs }, changes.slice(0, 1), opts);

const cpuOf = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
};
const backends = async () => new Map((await admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [name])).rows.map((r) => [r.pid, cpuOf(r.pid)]));
const pg0 = await backends();
const cpu0 = process.cpuUsage();
const t = performance.now();
for (let i = 1; i < changes.length; i += batch) await storeBatch({ pool, blobs }, changes.slice(i, i + batch), opts);
const seconds = (performance.now() - t) / 1000;
const cpu = process.cpuUsage(cpu0);
let pgMs = 0;
for (const [pid, ms] of await backends()) pgMs += ms - (pg0.get(pid) ?? 0);
const n = changes.length - 1;
await pool.end();
await admin.query(`DROP DATABASE ${name}`);
await admin.end();
console.log(JSON.stringify({ repos: n, recordsPerRepo: Number(values.records), batch, seconds, cpuMsPerRepo: { process: (cpu.user + cpu.system) / 1000 / n, postgres: pgMs / n } }));
