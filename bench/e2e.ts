/**
 * End-to-end backfill throughput: N small signed repos through Temporal (bulk `backfill`
 * workflow, `backfillMany` activities, a real worker, PostgreSQL, a directory blobstore).
 *
 * The repos are served by a static loopback server that answers `listRepos`, `getRepo` and the
 * PLC's `/<did>` from pre-generated CARs: the reference PDS would spend minutes creating 2,000
 * accounts, and this measures repowalk, not the PDS. Run by bench/run.ts, which passes the stack.
 */
import { createServer, type Server } from 'node:http';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { Client, Connection } from '@temporalio/client';
import { makeRepo, generateRecords, newKeypair } from '../atproto/testing/make-repo.ts';
import { loadConfig } from '../config/load.ts';
import { runWorker } from '../workers/worker.ts';
import { JOBS } from '../workers/jobs.ts';
import { taskQueueFor } from '../config/task-queues.ts';
import { backfill, type BackfillProgress } from '../workflows/backfill.ts';

interface SmallRepo {
  did: string;
  car: string; // base64
  signingKey: string; // did:key
}

const CACHE_VERSION = 3;

/** N repos of `records` records each, signed, cached on disk (they take a while to make). */
async function smallRepos(n: number, records: number, log: (l: string) => void): Promise<SmallRepo[]> {
  const dir = join(process.env.REPOWALK_CACHE_DIR ?? join(process.env.HOME ?? tmpdir(), '.cache', 'repowalk'), 'test-repos');
  const file = join(dir, `small-v${CACHE_VERSION}-${n}x${records}.json`);
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8'));
  log(`e2e: making ${n} signed repos of ${records} records (once; cached in ${file})`);
  const keypair = await newKeypair();
  const out: SmallRepo[] = [];
  for (let i = 0; i < n; i++) {
    // did:plc identifiers are 24 characters of base32 (a-z, 2-7): the index, spelled in it.
    const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
    let tail = '';
    for (let v = i; tail.length < 8; v = Math.floor(v / 32)) tail = alphabet[v % 32] + tail;
    const did = `did:plc:bench${'a'.repeat(11)}${tail}`;
    // Distinct record content per repo, as on the network: repos that shared every block would
    // measure lock contention on shared refcounts, not backfill.
    const recs = generateRecords(records).map((r) => ({ ...r, value: { ...r.value, bench: `${i}` } }));
    const made = await makeRepo({ did, records: recs, keypair });
    out.push({ did, car: Buffer.from(made.car).toString('base64'), signingKey: made.signingKey });
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(file, JSON.stringify(out));
  return out;
}

/** listRepos, getRepo and PLC lookups for `repos`, all on one loopback port. */
async function serveRepos(repos: SmallRepo[]): Promise<{ url: string; server: Server }> {
  const byDid = new Map(repos.map((r) => [r.did, { ...r, bytes: Buffer.from(r.car, 'base64') }]));
  const order = repos.map((r) => r.did);
  let base = '';
  const server = createServer((req, res) => {
    const u = new URL(req.url ?? '/', base);
    if (u.pathname === '/xrpc/com.atproto.sync.listRepos') {
      const from = Number(u.searchParams.get('cursor') ?? 0);
      const limit = Math.min(Number(u.searchParams.get('limit') ?? 500), 1000);
      const page = order.slice(from, from + limit);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ repos: page.map((did) => ({ did, head: 'bafy', rev: '3k', active: true })), ...(page.length ? { cursor: String(from + page.length) } : {}) }));
    } else if (u.pathname === '/xrpc/com.atproto.sync.getRepo') {
      const r = byDid.get(u.searchParams.get('did') ?? '');
      if (!r) {
        res.statusCode = 400;
        res.end(JSON.stringify({ error: 'RepoNotFound', message: 'no such repo' }));
        return;
      }
      res.setHeader('content-type', 'application/vnd.ipld.car');
      res.end(r.bytes);
    } else if (u.pathname.startsWith('/plc/did:plc:')) {
      const did = decodeURIComponent(u.pathname.slice('/plc/'.length));
      const r = byDid.get(did);
      if (!r) {
        res.statusCode = 404;
        res.end('{}');
        return;
      }
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({
          '@context': ['https://www.w3.org/ns/did/v1'],
          id: did,
          alsoKnownAs: [`at://${did.slice(8, 16)}.bench.test`],
          verificationMethod: [{ id: `${did}#atproto`, type: 'Multikey', controller: did, publicKeyMultibase: r.signingKey.slice('did:key:'.length) }],
          service: [{ id: '#atproto_pds', type: 'AtprotoPersonalDataServer', serviceEndpoint: base }],
        }),
      );
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  return { url: base, server };
}

export interface E2eBench {
  repos: number;
  recordsPerRepo: number;
  seconds: number;
  reposPerSecond: number;
  imported: number;
  failed: number;
  totals: BackfillProgress['totals'];
}

export async function benchE2e(opts: { repos: number; records: number; temporalAddress: string; databaseUrl: string; log?: (l: string) => void }): Promise<E2eBench> {
  const log = opts.log ?? ((l: string) => console.error(l));
  const repos = await smallRepos(opts.repos, opts.records, log);
  const { url, server } = await serveRepos(repos);
  const dbName = `bench_e2e_${Date.now().toString(36)}`;
  const admin = new pg.Client({ connectionString: opts.databaseUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${dbName}`);
  await admin.end();
  const dbUrl = new URL(opts.databaseUrl);
  dbUrl.pathname = `/${dbName}`;
  const prefix = `bench-${Date.now().toString(36)}`;
  const config = loadConfig({
    env: {
      TEMPORAL_ADDRESS: opts.temporalAddress,
      DATABASE_URL: dbUrl.toString(),
      REPOWALK_TASK_QUEUE: prefix,
      REPOWALK_BLOB_DIR: mkdtempSync(join(tmpdir(), 'repowalk-bench-e2e-')),
      REPOWALK_PLC_URL: `${url}/plc`,
      REPOWALK_ALLOW_PRIVATE_ADDRESSES: 'true',
      REPOWALK_PDS_CONCURRENCY: '16',
      REPOWALK_LOG_LEVEL: 'warn',
    },
  });
  const stop = new AbortController();
  let ready!: () => void;
  const isReady = new Promise<void>((r) => (ready = r));
  const worker = runWorker({
    config,
    endpoints: { temporalAddress: opts.temporalAddress, namespace: 'default', databaseUrl: dbUrl.toString(), s3: { endpoint: undefined, region: 'us-east-1', accessKeyId: undefined, secretAccessKey: undefined, buckets: [], forcePathStyle: true }, stack: undefined },
    jobs: JOBS.filter((j) => j.name === 'backfill'),
    signal: stop.signal,
    onReady: () => ready(),
  });
  await Promise.race([isReady, worker]);
  const client = new Client({ connection: await Connection.connect({ address: opts.temporalAddress }) });
  try {
    log(`e2e: backfilling ${repos.length} repos through Temporal`);
    const t = performance.now();
    const progress = await client.workflow.execute(backfill, {
      taskQueue: taskQueueFor(config, 'backfill'),
      workflowId: `${prefix}/backfill`,
      args: [{ source: { kind: 'pds', url }, pageSize: 200, concurrency: 16 }],
    });
    const seconds = (performance.now() - t) / 1000;
    return {
      repos: repos.length,
      recordsPerRepo: opts.records,
      seconds,
      reposPerSecond: repos.length / seconds,
      imported: progress.totals.imported,
      totals: progress.totals,
      failed: progress.totals.failed,
    };
  } finally {
    await client.connection.close();
    stop.abort();
    await worker.catch(() => {});
    server.close();
  }
}
