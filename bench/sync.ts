/**
 * Live sync throughput: a loopback upstream replays a generated firehose (bench/sync-firehose.ts:
 * signed commits with sync v1.1 proofs) as fast as the consumer reads it (WebSocket backpressure),
 * and the consumer (sync/consumer.ts, no Temporal) verifies and stores every frame through the
 * batched store into PostgreSQL and a directory blobstore. Reports applied events/s, the p99 lag
 * (a frame's apply time minus its send time, sampled per batch), and RSS over the run.
 *
 *   node bench/sync.ts --database-url URL [--repos 200] [--commits 50] [--max-batch 500] [--verify-threads 1]
 *
 * `cpuMsPerEvent` is the CPU time of this process (every thread) per frame; PostgreSQL's is not in it.
 */
import { parseArgs } from 'node:util';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:http';
import pg from 'pg';
import { WebSocketServer } from 'ws';
import { connectPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { FilterOptions } from '../backfill/filters.ts';
import { runSubscription } from '../sync/consumer.ts';
import { secp256k1Backend } from '../atproto/signature.ts';
import type { AtprotoIdentity } from '../atproto/net/index.ts';
import { generatedFirehose } from './sync-firehose.ts';

const { values } = parseArgs({
  options: { 'database-url': { type: 'string' }, repos: { type: 'string', default: '200' }, commits: { type: 'string', default: '50' }, 'max-batch': { type: 'string', default: '500' }, 'verify-threads': { type: 'string', default: '1' } },
});
const baseUrl = values['database-url'] ?? process.env.DATABASE_URL;
if (!baseUrl) throw new Error('bench/sync.ts needs --database-url or DATABASE_URL (bench/run.ts starts a stack and passes one)');
const log = (l: string) => console.error(l);
const hose = await generatedFirehose(Number(values.repos), Number(values.commits), log);

const name = `bench_sync_${Date.now().toString(36)}`;
const admin = new pg.Client({ connectionString: baseUrl });
await admin.connect();
await admin.query(`CREATE DATABASE ${name}`);
await admin.end();
const u = new URL(baseUrl);
u.pathname = `/${name}`;
const pool = await connectPool(u.toString(), { max: 4 });
await migrate(pool);
const blobs = new LocalBlobStore(mkdtempSync(join(tmpdir(), 'repowalk-bench-sync-')));

const sentAt = new Float64Array(hose.frames.length + 2);
const server = createServer();
const wss = new WebSocketServer({ server });
wss.on('connection', (ws) => {
  void (async () => {
    for (let i = 0; i < hose.frames.length; i++) {
      // Backpressure: wait while the consumer has not taken what was sent.
      while (ws.bufferedAmount > 4 * 1024 * 1024) await new Promise((r) => setTimeout(r, 1));
      sentAt[i + 1] = performance.now();
      ws.send(hose.frames[i]!);
    }
  })();
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
const host = `http://127.0.0.1:${(server.address() as { port: number }).port}`;

const rss: number[] = [];
const baselineMb = process.memoryUsage().rss / 1048576;
const sampler = setInterval(() => rss.push(process.memoryUsage().rss / 1048576), 1000);
const lags: number[] = [];
const stop = new AbortController();
const last = hose.frames.length;
const t0 = performance.now();
const cpu0 = process.cpuUsage();
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
    if (p.cursor !== undefined && sentAt[p.cursor]) lags.push(performance.now() - sentAt[p.cursor]!);
    if (p.cursor === last) stop.abort();
  },
});
const seconds = (performance.now() - t0) / 1000;
// Every thread of this process (the consumer, its verify threads, and the loopback upstream).
const cpu = process.cpuUsage(cpu0);
clearInterval(sampler);
wss.close();
server.close();
const records = Number((await pool.query('SELECT count(*) AS n FROM records')).rows[0].n);
await pool.end();
lags.sort((a, b) => a - b);
const applied = progress.outcomes.imported ?? 0;
console.log(
  JSON.stringify({
    frames: hose.frames.length,
    repos: hose.dids.length,
    seconds,
    eventsPerSecond: hose.frames.length / seconds,
    verifyThreads: Number(values['verify-threads']),
    secp256k1Backend,
    cpuMsPerEvent: (cpu.user + cpu.system) / 1000 / hose.frames.length,
    appliedCommits: applied,
    outcomes: progress.outcomes,
    errors: progress.errors,
    records,
    p99LagMs: lags.length ? lags[Math.min(lags.length - 1, Math.floor(lags.length * 0.99))] : null,
    rssMb: { baseline: baselineMb, peak: Math.max(baselineMb, ...rss), end: rss[rss.length - 1] ?? baselineMb, samples: rss.length },
  }),
);
