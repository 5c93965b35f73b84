/** The compression-benefit walk and the dictionary trainer behind it. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { zstdCompressSync, zstdDecompressSync } from 'node:zlib';
import type pg from 'pg';
import * as CBOR from '@atcute/cbor';
import { freshDatabase } from '../../test/stack.ts';
import { openPool } from '../../storage/db/pool.ts';
import { migrate } from '../../storage/db/migrate.ts';
import { LocalBlobStore } from '../../storage/blobstore/local.ts';
import { generateRecords } from '../../atproto/testing/make-repo.ts';
import { runWalk } from '../run.ts';
import { buildMirror, testDids } from '../../test/mirror.ts';
import { compressionTable } from './compression.ts';
import { trainDictionary } from './zstd-dict.ts';

describe('trainDictionary', () => {
  // Training samples come as a walk meets them: in MST order, so grouped by collection.
  const records = generateRecords(3000);
  const train = records.slice(0, 1000).sort((a, b) => (a.collection < b.collection ? -1 : a.collection > b.collection ? 1 : 0)).map((r) => CBOR.encode(r.value));
  const test = records.slice(1000).map((r) => CBOR.encode(r.value));
  const size = (dict?: Uint8Array) => test.reduce((n, s) => n + zstdCompressSync(s, dict ? { dictionary: dict } : {}).length, 0);

  it('beats no dictionary and a dictionary of concatenated samples, and round-trips', () => {
    const dict = trainDictionary(train, 16 * 1024);
    expect(dict.length).toBeLessThanOrEqual(16 * 1024);
    const raw = test.reduce((n, s) => n + s.length, 0);
    const none = size();
    const naive = size(Buffer.concat(train).subarray(-16 * 1024));
    const trained = size(dict);
    console.log(`dictionary on ${test.length} records (${raw} bytes): none ${none}, last 16 KiB of samples ${naive}, trained ${trained}`);
    expect(trained).toBeLessThan(none * 0.6);
    expect(trained).toBeLessThan(naive);
    const c = zstdCompressSync(test[5]!, { dictionary: dict });
    expect(Buffer.from(zstdDecompressSync(c, { dictionary: dict })).equals(Buffer.from(test[5]!))).toBe(true);
  });

  it('returns the samples themselves when they fit, and nothing for nothing', () => {
    expect(trainDictionary([Uint8Array.of(1, 2), Uint8Array.of(3)], 100)).toEqual(Uint8Array.of(1, 2, 3));
    expect(trainDictionary([], 100).length).toBe(0);
  });
});

describe('compression-benefit walk', () => {
  let pool: pg.Pool;
  let dir: string;
  const dids = testDids('compress', 2);

  beforeAll(async () => {
    pool = openPool(await freshDatabase('graph_compression'));
    await migrate(pool);
    dir = await mkdtemp(join(tmpdir(), 'repowalk-compress-'));
    await buildMirror({ pool, blobs: new LocalBlobStore(dir) }, [
      { did: dids[0]!, records: 400 },
      { did: dids[1]!, records: 10 },
    ]);
  }, 120_000);

  afterAll(async () => {
    await pool?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('counts every stored block once, with raw totals equal to the stored bytes', async () => {
    // Only the first repo: the second one's blocks are shared with it or its own.
    const { totals } = await runWalk({ pool, store: new LocalBlobStore(dir) }, { type: 'compression-benefit', compression: { trainSamples: 100 } }, [{ type: 'Repo', did: dids[0]! }]);
    const { rows } = await pool.query<{ n: string; bytes: string }>(
      `SELECT count(*) AS n, sum(byte_length) AS bytes FROM blocks WHERE pack_id = (SELECT min(id) FROM packs)`,
    );
    const table = compressionTable(totals.counters);
    expect(table.map((r) => r.type).sort()).toEqual(['Commit', 'MstNode', 'Record']);
    expect(table.reduce((n, r) => n + r.count, 0)).toBe(Number(rows[0]!.n));
    expect(table.reduce((n, r) => n + r.raw, 0)).toBe(Number(rows[0]!.bytes));
    for (const r of table) {
      expect(r.zstd).toBeGreaterThan(0);
      expect(r.ratio).toBeCloseTo(r.raw / r.zstd, 2);
    }
    const records = table.find((r) => r.type === 'Record')!;
    expect(records.dict).toBeDefined();
    expect(records.dict!.count).toBe(records.count - 100);
    // Records of one type share their field names and shapes: a dictionary pays.
    expect(records.dict!.ratio).toBeGreaterThan(records.dict!.plainRatio * 1.3);
    console.log(JSON.stringify(table));
  });
});
