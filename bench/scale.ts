/**
 * `npm run bench -- --only scale`: what one repo and one record cost each resource a
 * full-network mirror uses (docs/SCALE.md), measured on a real backfill, then projected to the
 * network. Run by bench/run.ts, which passes the stack (Temporal, PostgreSQL, S3).
 *
 * A bulk backfill of `--repos` signed repos of `--records` records each (served by a static PDS
 * on loopback) runs through Temporal with `--workers` worker processes writing packs to S3
 * through a request-counting proxy; then `backfillRepo` (the per-repo path a failing repo takes)
 * runs for a sample of them. Measured: history events and bytes (`describe` of every run),
 * activity tasks, PostgreSQL bytes per row (`pg_total_relation_size`, indexes and TOAST
 * included), WAL written, CPU of the workers and of this database's PostgreSQL backends
 * (`/proc/<pid>/stat`), S3 objects and requests (through the proxy), bytes from the PDS.
 *
 *   node bench/scale.ts --temporal ADDR --database-url URL --s3 JSON [--repos 200] [--records 50] [--workers 2]
 */
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import { readFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { scratchDatabase } from './scratch-db.ts';
import { Client, Connection } from '@temporalio/client';
import { serveRepos, smallRepos } from '../atproto/testing/static-pds.ts';
import { startWorkerFleet } from '../stack/worker-fleet.ts';
import type { BackfillInput, BackfillProgress } from '../workflows/backfill.ts';
import { project, type PerUnit } from './scale-projection.ts';

const { values } = parseArgs({
  options: {
    temporal: { type: 'string' },
    'database-url': { type: 'string' },
    s3: { type: 'string' },
    repos: { type: 'string', default: '200' },
    records: { type: 'string', default: '50' },
    workers: { type: 'string', default: '2' },
    'per-repo-sample': { type: 'string', default: '10' },
  },
});
if (!values.temporal || !values['database-url'] || !values.s3) throw new Error('bench/scale.ts needs --temporal, --database-url and --s3 (bench/run.ts passes them)');
const s3 = JSON.parse(values.s3) as { endpoint: string; region: string; accessKeyId: string; secretAccessKey: string; buckets: string[] };
const REPOS = Number(values.repos);
const RECORDS = Number(values.records);
const WORKERS = Number(values.workers);
const log = (l: string) => console.error(`scale: ${l}`);

/** A pass-through proxy in front of the S3 server that counts requests by method and bytes sent. */
async function countingProxy(upstream: string) {
  const target = new URL(upstream);
  const counts: Record<string, number> = {};
  let bytesIn = 0;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    counts[req.method ?? '?'] = (counts[req.method ?? '?'] ?? 0) + 1;
    // The Host header is forwarded as signed (SigV4 covers it); only the socket goes elsewhere.
    const up = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.on('data', (d: Buffer) => (bytesIn += d.length));
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  return { url: `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`, counts, bytes: () => bytesIn, close: () => server.close() };
}

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 of stat(5), counted from the state field (3): indexes 11 and 12 here.
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const repos = await smallRepos(REPOS, RECORDS, log);
const served: Record<string, { requests: number; bytes: number }> = {};
const pds = await serveRepos(repos, {});
// Count what the PDS and PLC serve, by endpoint.
pds.server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => {
  const path = new URL(req.url ?? '/', 'http://x').pathname;
  const key = path.startsWith('/plc/') ? 'plc' : path.replace('/xrpc/', '');
  const entry = (served[key] ??= { requests: 0, bytes: 0 });
  entry.requests++;
  const write = res.write.bind(res);
  const end = res.end.bind(res);
  res.write = ((chunk: unknown, ...rest: unknown[]) => {
    if (chunk && typeof chunk !== 'function') entry.bytes += Buffer.byteLength(chunk as Buffer);
    return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof res.write;
  res.end = ((chunk?: unknown, ...rest: unknown[]) => {
    if (chunk && typeof chunk !== 'function') entry.bytes += Buffer.byteLength(chunk as Buffer);
    return (end as (...a: unknown[]) => ServerResponse)(chunk, ...rest);
  }) as typeof res.end;
});
const proxy = await countingProxy(s3.endpoint);

const db = await scratchDatabase(values['database-url'], 'bench_scale');
const dbName = db.name;
const dbUrl = new URL(db.url);
const prefix = `scale-${Date.now().toString(36)}`;
const fleet = await startWorkerFleet({
  count: WORKERS,
  jobs: ['backfill'],
  env: {
    REPOWALK_STATE_DIR: mkdtempSync(join(tmpdir(), 'repowalk-bench-scale-')),
    REPOWALK_LOG_LEVEL: 'warn',
    TEMPORAL_ADDRESS: values.temporal,
    DATABASE_URL: dbUrl.toString(),
    REPOWALK_TASK_QUEUE: prefix,
    REPOWALK_PLC_URL: `${pds.url}/plc`,
    REPOWALK_ALLOW_PRIVATE_ADDRESSES: 'true',
    // The static PDS's handles (*.bench.test) resolve nowhere: checking each costs a failed DNS
    // and HTTPS round (and, with many lanes at once, getaddrinfo's 5 s retry here), not repowalk.
    REPOWALK_VERIFY_HANDLES: 'false',
    REPOWALK_PDS_CONCURRENCY: '16',
    REPOWALK_BLOBSTORE: 's3',
    REPOWALK_S3_ENDPOINT: proxy.url,
    REPOWALK_S3_REGION: s3.region,
    REPOWALK_S3_BUCKETS: s3.buckets[0]!,
    REPOWALK_S3_ACCESS_KEY_ID: s3.accessKeyId,
    REPOWALK_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
  },
});
const pool = new pg.Pool({ connectionString: dbUrl.toString(), max: 2 });
const client = new Client({ connection: await Connection.connect({ address: values.temporal }) });
try {
  const pids = fleet.workers.map((w) => w.child.pid!);
  const cpu0 = pids.map(cpuSeconds);
  // PostgreSQL's side: the CPU of this database's backends, and the WAL the cluster wrote.
  const backendCpu = async () => {
    const { rows } = await pool.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()');
    return new Map(rows.map((r) => [r.pid, (() => { try { return cpuSeconds(r.pid); } catch { return 0; } })()]));
  };
  const pgCpu0 = await backendCpu();
  const wal0 = (await pool.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]!.lsn;
  const t0 = performance.now();
  const workflowId = `${prefix}/backfill`;
  const input: BackfillInput = { source: { kind: 'pds', url: pds.url }, pageSize: 100, concurrency: 8, pagesInFlight: WORKERS };
  log(`backfilling ${REPOS} repos of ${RECORDS} records with ${WORKERS} worker processes`);
  const result = (await client.workflow.execute('backfill', { taskQueue: `${prefix}-backfill`, workflowId, args: [input] })) as BackfillProgress;
  const seconds = (performance.now() - t0) / 1000;
  const cpu = pids.map(cpuSeconds).reduce((a, b, i) => a + b - cpu0[i]!, 0);
  let pgCpu = 0;
  for (const [pid, end] of await backendCpu()) pgCpu += end - (pgCpu0.get(pid) ?? 0);
  const walBytes = Number((await pool.query<{ n: string }>('SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn) AS n', [wal0])).rows[0]!.n);
  if (result.totals.imported !== REPOS) throw new Error(`expected ${REPOS} imported, got ${JSON.stringify(result.totals)}`);

  // Every run of the bulk workflow (continue-as-new makes several on big sources).
  let bulkEvents = 0;
  let bulkBytes = 0;
  let activityTasks = 0;
  for await (const run of client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) {
    const handle = client.workflow.getHandle(workflowId, run.runId);
    const desc = await handle.describe();
    bulkEvents += desc.historyLength;
    bulkBytes += desc.historySize ?? 0;
    const history = await handle.fetchHistory();
    activityTasks += (history.events ?? []).filter((e) => e.activityTaskScheduledEventAttributes).length;
  }

  // The per-repo path: a backfillRepo workflow per repo (what a failing repo gets; here healthy).
  const sample = repos.slice(0, Number(values['per-repo-sample']));
  let perRepoEvents = 0;
  let perRepoBytes = 0;
  for (const r of sample) {
    const id = `${prefix}/repo/${r.did}`;
    await client.workflow.execute('backfillRepo', { taskQueue: `${prefix}-backfill`, workflowId: id, args: [{ did: r.did }] });
    const desc = await client.workflow.getHandle(id).describe();
    perRepoEvents += desc.historyLength;
    perRepoBytes += desc.historySize ?? 0;
  }

  const size = async (table: string) => Number((await pool.query<{ n: string }>(`SELECT pg_total_relation_size($1::regclass) AS n`, [table])).rows[0]!.n);
  const rows = async (table: string) => Number((await pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`)).rows[0]!.n);
  const tables = ['repos', 'records', 'events', 'blocks', 'packs'] as const;
  const pgTables = Object.fromEntries(await Promise.all(tables.map(async (t) => [t, { rows: await rows(t), bytes: await size(t) }] as const)));
  // Every table of the mirror with its indexes and TOAST; not pg_database_size, whose fixed
  // catalog overhead (several MB) would dominate a small bench.
  const dbBytes = Number((await pool.query<{ n: string }>('SELECT sum(pg_total_relation_size(relid)) AS n FROM pg_stat_user_tables')).rows[0]!.n);
  const records = pgTables.records!.rows;

  const perUnit: PerUnit = {
    recordsPerRepo: records / REPOS,
    temporal: {
      bulkEventsPerRepo: bulkEvents / REPOS,
      bulkBytesPerRepo: bulkBytes / REPOS,
      activityTasksPerRepo: activityTasks / REPOS,
      perRepoWorkflowEvents: perRepoEvents / sample.length,
      perRepoWorkflowBytes: perRepoBytes / sample.length,
    },
    postgres: {
      bytesPerRecord: pgTables.records!.bytes / records,
      bytesPerEvent: pgTables.events!.bytes / pgTables.events!.rows,
      bytesPerBlock: pgTables.blocks!.bytes / pgTables.blocks!.rows,
      blocksPerRecord: pgTables.blocks!.rows / records,
      bytesPerRepoRow: pgTables.repos!.bytes / REPOS,
      databaseBytesPerRecord: dbBytes / records,
      backendCpuSecondsPerRecord: pgCpu / records,
      walBytesPerRecord: walBytes / records,
    },
    s3: {
      objectsPerRepo: pgTables.packs!.rows / REPOS,
      requestsPerRepo: Object.values(proxy.counts).reduce((a, b) => a + b, 0) / REPOS,
      requestsByMethodPerRepo: Object.fromEntries(Object.entries(proxy.counts).map(([m, n]) => [m, n / REPOS])),
      bytesPerRecord: proxy.bytes() / records,
    },
    worker: { cpuSecondsPerRecord: cpu / records, cpuSecondsPerRepo: cpu / REPOS },
    network: {
      pdsRequestsPerRepo: Object.fromEntries(Object.entries(served).map(([k, v]) => [k, v.requests / REPOS])),
      carBytesPerRecord: (served['com.atproto.sync.getRepo']?.bytes ?? 0) / records,
      bytesPerRepo: Object.values(served).reduce((a, v) => a + v.bytes, 0) / REPOS,
    },
  };
  const measured = { repos: REPOS, recordsPerRepo: RECORDS, workers: WORKERS, seconds, reposPerSecond: REPOS / seconds, recordsPerSecond: records / seconds, workerCpuSeconds: cpu, postgresBackendCpuSeconds: pgCpu, walBytes, pgTables, dbBytes };
  console.log(JSON.stringify({ measured, perUnit, projection: project(perUnit) }, null, 2));
} finally {
  await client.connection.close();
  await fleet.stop();
  await pool.end();
  await db.drop();
  proxy.close();
  pds.server.close();
}
process.exit(0);
