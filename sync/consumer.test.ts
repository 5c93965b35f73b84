/**
 * Commits that wait for a resync are held in the subscription's memory; a crash must not lose
 * them. The committed cursor stays before the earliest waiting commit, so a restarted consumer
 * (nothing in memory) is sent them again and applies them once the resync has landed, while the
 * other repos' frames it re-reads are skipped as replays (no event twice).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { freshDatabase } from '../test/stack.ts';
import { startFirehoseServer, type FirehoseServer } from '../test/firehose-server.ts';
import { connectPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { FilterOptions } from '../backfill/filters.ts';
import { recordFilter } from '../backfill/import.ts';
import { storeBatch } from '../ingest/store.ts';
import type { AtprotoIdentity } from '../atproto/net/index.ts';
import { generatedFirehose, type Firehose } from '../bench/sync-firehose.ts';
import { decodeFrame } from './frames.ts';
import { verifyCommitFrame, type CommitFrame } from './verify-commit.ts';
import { readCursor, runSubscription } from './consumer.ts';

let pool: pg.Pool;
let dir: string;
let blobs: LocalBlobStore;
let hose: Firehose;
let server: FirehoseServer | undefined;

beforeAll(async () => {
  pool = await connectPool(await freshDatabase('sync_consumer'));
  await migrate(pool);
  dir = await mkdtemp(join(tmpdir(), 'repowalk-consumer-'));
  blobs = new LocalBlobStore(dir);
  hose = await generatedFirehose(20, 5, () => {});
}, 120_000);

afterAll(async () => {
  await server?.stop();
  await pool?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Runs a consumer until its cursor has read `lastSeq`, as a fresh process would (nothing in memory). */
async function consumeUntil(host: string, lastSeq: number, resyncs: string[]) {
  const stop = new AbortController();
  const timer = setTimeout(() => stop.abort(), 60_000);
  try {
    return await runSubscription({
      host,
      stores: { pool, blobs },
      filter: FilterOptions.parse({}),
      maxBatch: 7,
      batchWaitMs: 20,
      signal: stop.signal,
      resolve: async (did) => ({ did, pds: host, handle: undefined, signingKey: hose.signingKey }) as unknown as AtprotoIdentity,
      requestResync: async (did) => void resyncs.push(did),
      onProgress: (p) => p.cursor === lastSeq && stop.abort(),
    });
  } finally {
    clearTimeout(timer);
  }
}

describe('commits waiting for a resync, across a crash', () => {
  it('are sent again after a restart: the cursor stays before them, and nothing is applied twice', async () => {
    const frames = hose.frames.map((bytes) => ({ bytes, frame: decodeFrame(bytes) as CommitFrame }));
    const a = hose.dids[0]!;
    const ofA = frames.filter((f) => f.frame.repo === a);
    // The firehose misses A's first post: A's later commits do not follow the stored rev (a gap).
    const missed = ofA[1]!;
    const lastSeq = frames[frames.length - 1]!.frame.seq;
    server = await startFirehoseServer(frames.filter((f) => f !== missed).map((f) => ({ seq: f.frame.seq, bytes: f.bytes })));

    const resyncs: string[] = [];
    const first = await consumeUntil(server.url, lastSeq, resyncs);
    expect(first.cursor).toBe(lastSeq);
    expect(resyncs).toContain(a);
    expect(first.waitingRepos).toBe(1);
    // Committed: just before A's first waiting commit, not the last seq read.
    expect(await readCursor(pool, server.url)).toBe(ofA[2]!.frame.seq - 1);
    const revOf = async (did: string) => (await pool.query<{ rev: string }>('SELECT rev FROM repos WHERE did = $1', [did])).rows[0]?.rev;
    expect(await revOf(a)).toBe(ofA[0]!.frame.rev);

    // The worker dies here; meanwhile A's resync lands at the rev of the commit the firehose missed.
    const landed = await verifyCommitFrame(missed.frame, hose.signingKey);
    const stored = await storeBatch({ pool, blobs }, [landed], { filter: recordFilter(FilterOptions.parse({})), origin: 'backfill' });
    expect(stored.outcomes[0]!.kind).toBe('imported');

    const second = await consumeUntil(server.url, lastSeq, resyncs);
    expect(server.connections.at(-1)).toBe(ofA[2]!.frame.seq - 1);
    const replayed = frames.filter((f) => f.frame.seq >= ofA[2]!.frame.seq && f !== missed).length;
    expect(second.outcomes).toEqual({ imported: ofA.length - 2, skipped: replayed - (ofA.length - 2) });
    expect(await revOf(a)).toBe(ofA.at(-1)!.frame.rev);
    expect(await readCursor(pool, server.url)).toBe(lastSeq);
    // One create event per post of every repo: none lost, none doubled.
    const { rows } = await pool.query<{ did: string; n: number }>(`SELECT did, count(*)::int AS n FROM events WHERE kind = 'create' GROUP BY did ORDER BY did`);
    expect(rows).toEqual([...hose.dids].sort().map((did) => ({ did, n: ofA.length - 1 })));
  });
});
