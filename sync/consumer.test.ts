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
import { generatedFirehose, readFirehose } from '../bench/sync-firehose.ts';
import * as CBOR from '@atcute/cbor';
import { Secp256k1Keypair } from '@atproto/crypto';
import { readCarBlocks, resignCommit } from '../atproto/testing/car-edit.ts';
import { decodeFrameParts, encodeFrame } from '../test/firehose-server.ts';
import { decodeFrame } from './frames.ts';
import { verifyCommitFrame, type CommitFrame } from './verify-commit.ts';
import { readCursor, runSubscription } from './consumer.ts';

let pool: pg.Pool;
let dir: string;
let blobs: LocalBlobStore;
let hose: { frames: Uint8Array[]; signingKey: string; dids: string[] };
let server: FirehoseServer | undefined;

beforeAll(async () => {
  pool = await connectPool(await freshDatabase('sync_consumer'));
  await migrate(pool);
  dir = await mkdtemp(join(tmpdir(), 'repowalk-consumer-'));
  blobs = new LocalBlobStore(dir);
  const meta = await generatedFirehose(20, 5, () => {});
  hose = { ...meta, frames: readFirehose(meta.file) };
}, 120_000);

afterAll(async () => {
  await server?.stop();
  await pool?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Runs a consumer until its cursor has read `lastSeq`, as a fresh process would (nothing in memory). */
async function consumeUntil(host: string, lastSeq: number, resyncs: string[], resolve?: (did: string, fresh: boolean) => Promise<AtprotoIdentity>) {
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
      resolve: resolve ?? (async (did) => ({ did, pds: host, handle: undefined, signingKey: hose.signingKey }) as unknown as AtprotoIdentity),
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

describe('a signing key rotated without an #identity frame', () => {
  it('fails the cached key, resolves the DID again once, and applies with the new key', async () => {
    const db = await connectPool(await freshDatabase('sync_rotation'));
    await migrate(db);
    const savedPool = pool;
    pool = db;
    try {
      const frames = hose.frames.map((bytes) => ({ bytes, frame: decodeFrame(bytes) as CommitFrame }));
      const a = hose.dids[3]!;
      const ofA = frames.filter((f) => f.frame.repo === a);
      // A's PDS rotates its key after A's second commit; the DID document names the new key from then on.
      const next = await Secp256k1Keypair.create();
      const rotatedFrom = ofA[2]!.frame.seq;
      const script = await Promise.all(
        frames.map(async (f) => {
          if (f.frame.repo !== a || f.frame.seq < rotatedFrom) return { seq: f.frame.seq, bytes: f.bytes };
          const { header, body } = decodeFrameParts(f.bytes);
          const car = await resignCommit(f.frame.blocks, next);
          return { seq: f.frame.seq, bytes: encodeFrame(header, { ...body, blocks: CBOR.toBytes(car), commit: { $link: readCarBlocks(car).root } }) };
        }),
      );
      const upstream = await startFirehoseServer(script);
      // The DID document names the new key from the first time the consumer asks afresh, which
      // only a signature failing with the key it holds makes it do (there is no #identity frame).
      const fresh: boolean[] = [];
      let rotated = false;
      const resolve = async (did: string, isFresh: boolean) => {
        if (did === a) {
          fresh.push(isFresh);
          if (isFresh) rotated = true;
        }
        return { did, pds: upstream.url, handle: undefined, signingKey: did === a && rotated ? next.did() : hose.signingKey } as unknown as AtprotoIdentity;
      };
      const resyncs: string[] = [];
      const lastSeq = frames[frames.length - 1]!.frame.seq;
      let progress;
      try {
        progress = await consumeUntil(upstream.url, lastSeq, resyncs, resolve);
      } finally {
        await upstream.stop();
      }
      expect(progress.errors).toBe(0);
      expect(resyncs).toEqual([]);
      expect(progress.outcomes).toEqual({ imported: frames.length });
      // Resolved once as new (its first commit), then afresh once, at the first commit the old
      // key failed; the new key is kept for the commits after it.
      expect(fresh).toEqual([false, true]);
      const row = (await db.query('SELECT rev, signing_key FROM repos WHERE did = $1', [a])).rows[0];
      expect(row).toEqual({ rev: ofA.at(-1)!.frame.rev, signing_key: next.did() });
    } finally {
      pool = savedPool;
      await db.end();
    }
  });
});
