import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { CarIndexer, CarReader } from '@ipld/car';
import { encode, toBytes, toCidLink } from '@atcute/cbor';
import { create as createCid, decode as decodeCid, toString as cidToString } from '@atcute/cid';
import { freshBucket, freshDatabase, testStack } from '../test/stack.ts';
import type { BlobStore } from './blobstore/types.ts';
import { LocalBlobStore } from './blobstore/local.ts';
import { S3BlobStore } from './blobstore/s3.ts';
import { migrate } from './db/migrate.ts';
import { openPool, withTransaction } from './db/pool.ts';
import { BlockHashMismatchError, InvalidBlockCidError, PackNotFoundError } from './pack-errors.ts';
import { PackWriter, indexPack, locateBlock, putPack, readBlock, sortByCid, storePack } from './packs.ts';

interface Block {
  cid: Uint8Array;
  data: Uint8Array;
}

/** Realistic atproto blocks: records, an MST-node-like block linking to them, a raw block. */
async function makeBlocks(n: number, tag: string): Promise<Block[]> {
  const blocks: Block[] = [];
  for (let i = 0; i < n; i++) {
    const data = encode({
      $type: 'app.bsky.feed.post',
      text: `${tag} post ${i} `.repeat(1 + (i % 7)),
      createdAt: new Date(Date.UTC(2024, 0, 1, 0, 0, i)).toISOString(),
      langs: ['en'],
    });
    blocks.push({ cid: (await createCid(0x71, data)).bytes, data });
  }
  // Sizes whose CAR length prefixes take 2 and 3 varint bytes.
  for (const size of [200, 20_000]) {
    const data = encode({ $type: 'app.bsky.actor.profile', description: `${tag} `.padEnd(size, 'x') });
    blocks.push({ cid: (await createCid(0x71, data)).bytes, data });
  }
  const node = encode({
    l: null,
    e: blocks.slice(0, 4).map((b, i) => ({
      p: i,
      k: toBytes(new TextEncoder().encode(`app.bsky.feed.post/${tag}${i}`)),
      v: toCidLink(decodeCid(b.cid)),
      t: null,
    })),
  });
  blocks.push({ cid: (await createCid(0x71, node)).bytes, data: node });
  const raw = new TextEncoder().encode(`${tag} raw bytes`);
  blocks.push({ cid: (await createCid(0x55, raw)).bytes, data: raw });
  return blocks;
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

function writerOf(blocks: Block[]): PackWriter {
  const w = new PackWriter();
  for (const b of blocks) w.add(b.cid, b.data);
  return w;
}

describe('PackWriter', () => {
  it('writes a CARv1 that @ipld/car reads back block for block, with offsets at the block data', async () => {
    const blocks = await makeBlocks(50, 'car');
    const writer = new PackWriter();
    for (const b of blocks) expect(writer.add(b.cid, b.data)).toBe(true);
    // Deduplicated by CID, even from a different array holding the same bytes.
    expect(writer.add(Uint8Array.from(blocks[3]!.cid), blocks[3]!.data)).toBe(false);
    expect(writer.blockCount).toBe(blocks.length);

    const pack = writer.finish();
    expect(pack.bytes.length).toBe(writer.byteLength);
    expect(writer.finish()).toBe(pack);
    expect(() => writer.add(blocks[0]!.cid, blocks[0]!.data)).toThrow(/after finish/);

    const sha = createHash('sha256').update(pack.bytes).digest('hex');
    expect(pack.key).toBe(`packs/${sha.slice(0, 2)}/${sha}.car`);

    const reader = await CarReader.fromBytes(pack.bytes);
    expect(await reader.getRoots()).toEqual([]);
    const read: { cid: string; data: string }[] = [];
    for await (const b of reader.blocks()) read.push({ cid: hex(b.cid.bytes), data: hex(b.bytes) });
    expect(read).toEqual(blocks.map((b) => ({ cid: hex(b.cid), data: hex(b.data) })));

    const indexer = await CarIndexer.fromBytes(pack.bytes);
    const offsets: { cid: string; offset: number; length: number }[] = [];
    for await (const e of indexer) offsets.push({ cid: hex(e.cid.bytes), offset: e.blockOffset, length: e.blockLength });
    expect(pack.entries.map((e) => ({ cid: hex(e.cid), offset: e.offset, length: e.length }))).toEqual(offsets);
    for (const [i, e] of pack.entries.entries()) {
      expect(hex(pack.bytes.subarray(e.offset, e.offset + e.length))).toBe(hex(blocks[i]!.data));
    }
  });

  it('writes an empty pack as a valid CAR with no blocks', async () => {
    const pack = new PackWriter().finish();
    expect(pack.entries).toEqual([]);
    const reader = await CarReader.fromBytes(pack.bytes);
    expect(await reader.getRoots()).toEqual([]);
    let n = 0;
    for await (const _ of reader.blocks()) n++;
    expect(n).toBe(0);
  });

  it('refuses bytes that are not a binary CIDv1, and says so for the 0x00-prefixed link form', async () => {
    const [b] = await makeBlocks(1, 'bad');
    const w = new PackWriter();
    expect(() => w.add(Uint8Array.of(0, ...b!.cid), b!.data)).toThrow(InvalidBlockCidError);
    expect(() => w.add(Uint8Array.of(0, ...b!.cid), b!.data)).toThrow(/pass Cid\.bytes/);
    expect(() => w.add(b!.cid.subarray(0, 20), b!.data)).toThrow(InvalidBlockCidError);
    expect(w.blockCount).toBe(0);
  });
});

describe('sortByCid', () => {
  it('orders CIDs as Postgres orders bytea (byte order), ties and odd shapes included', () => {
    const cids: Uint8Array[] = [];
    for (let i = 0; i < 2000; i++) {
      cids.push(Uint8Array.of(1, i % 3 ? 0x71 : 0x55, 0x12, 32, ...randomBytes(32)));
    }
    // Digests that share their first 4 bytes, so the numeric key ties.
    const shared = randomBytes(4);
    for (let i = 0; i < 50; i++) cids.push(Uint8Array.of(1, 0x71, 0x12, 32, ...shared, ...randomBytes(28)));
    cids.push(Uint8Array.of(0, 1, 2), Uint8Array.of(1), Uint8Array.of(1, 0x71, 0x12, 20, ...randomBytes(20)));
    const items = cids.map((cid, i) => ({ cid, i }));
    const expected = items.toSorted((a, b) => Buffer.compare(a.cid, b.cid)).map((e) => e.i);
    expect(sortByCid(items).map((e) => e.i)).toEqual(expected);
  });
});

interface StoreCase {
  name: string;
  make: () => Promise<{ store: BlobStore; close: () => Promise<void> }>;
}

const stores: StoreCase[] = [
  {
    name: 'local directory',
    make: async () => {
      const dir = await mkdtemp(join(tmpdir(), 'repowalk-packs-'));
      return { store: new LocalBlobStore(dir), close: () => rm(dir, { recursive: true, force: true }) };
    },
  },
  {
    name: 'S3',
    make: async () => {
      const s3 = testStack().s3;
      const store = new S3BlobStore({
        bucket: await freshBucket('packs'),
        config: { endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
      });
      return { store, close: async () => store.destroy() };
    },
  },
];

describe.each(stores)('packs stored in $name, indexed in Postgres', ({ make }) => {
  let pool: pg.Pool;
  let store: BlobStore;
  let close: () => Promise<void>;
  let blocks: Block[];

  beforeAll(async () => {
    pool = openPool(await freshDatabase('packs'));
    await migrate(pool);
    ({ store, close } = await make());
    blocks = await makeBlocks(300, 'store');
  });
  afterAll(async () => {
    await pool.end();
    await close();
  });

  it('puts the pack, indexes every block, and reads each back by ranged get', async () => {
    const stored = await withTransaction(pool, (c) => storePack(store, c, writerOf(blocks)));
    expect(stored).not.toBeNull();
    expect(await store.has(stored!.key)).toBe(true);
    expect(stored!.inserted.map(hex).sort()).toEqual(blocks.map((b) => hex(b.cid)).sort());

    const packRow = await pool.query('SELECT key, size_bytes, block_count FROM packs WHERE id = $1', [stored!.packId]);
    expect(packRow.rows[0]).toEqual({ key: stored!.key, size_bytes: String(stored!.sizeBytes), block_count: blocks.length });
    const refcounts = await pool.query('SELECT DISTINCT refcount FROM blocks');
    expect(refcounts.rows).toEqual([{ refcount: '0' }]);

    for (const b of blocks) {
      const loc = await locateBlock(pool, b.cid);
      expect(loc).toMatchObject({ packId: stored!.packId, packKey: stored!.key, length: b.data.length });
      const bytes = await readBlock(store, loc!.packKey, loc!.offset, loc!.length, b.cid);
      expect(hex(bytes)).toBe(hex(b.data));
    }

    // What the blobstore holds is a CAR an outside reader accepts, with the same blocks.
    const reader = await CarReader.fromBytes((await store.get(stored!.key))!);
    let n = 0;
    for await (const b of reader.blocks()) {
      expect(hex(b.bytes)).toBe(hex(blocks[n]!.data));
      expect(hex(b.cid.bytes)).toBe(hex(blocks[n]!.cid));
      n++;
    }
    expect(n).toBe(blocks.length);
  });

  it('is idempotent: storing the same pack again finds its row and indexes nothing new', async () => {
    const before = await pool.query('SELECT count(*)::int AS n FROM blocks');
    const first = await locateBlock(pool, blocks[0]!.cid);
    const again = await withTransaction(pool, (c) => storePack(store, c, writerOf(blocks)));
    expect(again!.packId).toBe(first!.packId);
    expect(again!.inserted).toEqual([]);
    expect((await pool.query('SELECT count(*)::int AS n FROM blocks')).rows).toEqual(before.rows);
    expect((await pool.query('SELECT count(*)::int AS n FROM packs')).rows).toEqual([{ n: 1 }]);
  });

  it('keeps blocks already indexed where they are and reports only the new ones', async () => {
    const fresh = await makeBlocks(10, 'second');
    const shared = blocks.slice(0, 5);
    const pack = writerOf([...shared, ...fresh]).finish();
    await putPack(store, pack);
    const stored = await withTransaction(pool, (c) => indexPack(c, pack));
    expect(stored.inserted.map(hex).sort()).toEqual(fresh.map((b) => hex(b.cid)).sort());
    const firstPack = (await locateBlock(pool, blocks[0]!.cid))!.packId;
    expect(firstPack).not.toBe(stored.packId);
    for (const b of shared) expect((await locateBlock(pool, b.cid))!.packId).toBe(firstPack);
    for (const b of fresh) {
      const loc = (await locateBlock(pool, b.cid))!;
      expect(loc.packId).toBe(stored.packId);
      expect(hex(await readBlock(store, loc.packKey, loc.offset, loc.length, b.cid))).toBe(hex(b.data));
    }
  });

  it('indexes nothing when the transaction rolls back, leaving the pack as garbage', async () => {
    const extra = await makeBlocks(3, 'rolled-back');
    const writer = writerOf(extra);
    await expect(
      withTransaction(pool, async (c) => {
        await storePack(store, c, writer);
        throw new Error('import failed after the put');
      }),
    ).rejects.toThrow('import failed');
    expect(await store.has(writer.finish().key)).toBe(true);
    expect(await locateBlock(pool, extra[0]!.cid)).toBeNull();
    expect((await pool.query('SELECT 1 FROM packs WHERE key = $1', [writer.finish().key])).rowCount).toBe(0);
  });

  it('stores nothing for an empty writer', async () => {
    expect(await withTransaction(pool, (c) => storePack(store, c, new PackWriter()))).toBeNull();
  });

  it('names a missing pack', async () => {
    const missing = `packs/00/${'0'.repeat(64)}.car`;
    await expect(readBlock(store, missing, 0, 1)).rejects.toThrow(PackNotFoundError);
  });

  it('catches a flipped byte, naming the CID, while the other blocks still read', async () => {
    const victim = blocks[7]!;
    const loc = (await locateBlock(pool, victim.cid))!;
    const corrupt = Uint8Array.from((await store.get(loc.packKey))!);
    corrupt[loc.offset + Math.floor(loc.length / 2)]! ^= 0x01;
    await store.put(loc.packKey, corrupt);

    const err = await readBlock(store, loc.packKey, loc.offset, loc.length, victim.cid).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BlockHashMismatchError);
    const cid = cidToString(decodeCid(victim.cid));
    expect((err as BlockHashMismatchError).cid).toBe(cid);
    expect((err as Error).message).toContain(cid);
    expect((err as Error).message).toContain(loc.packKey);
    // Without a CID to check against, the read returns the (corrupt) bytes as they are.
    expect(hex(await readBlock(store, loc.packKey, loc.offset, loc.length))).not.toBe(hex(victim.data));

    const neighbour = blocks[8]!;
    const nloc = (await locateBlock(pool, neighbour.cid))!;
    expect(hex(await readBlock(store, nloc.packKey, nloc.offset, nloc.length, neighbour.cid))).toBe(hex(neighbour.data));
  });
});
