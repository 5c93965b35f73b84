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
import { bytesOf } from './blobstore/checks.ts';
import { S3BlobStore } from './blobstore/s3.ts';
import { migrate } from './db/migrate.ts';
import { openPool, withTransaction } from './db/pool.ts';
import { BlockHashMismatchError, InvalidBlockCidError, PackNotFoundError } from './pack-errors.ts';
import { PackWriter, indexPack, layOutPack, locateBlock, putPack, readBlock, sortByCid, storePack, varintLength, writeVarint } from './packs.ts';
import type { ByteSource } from './blobstore/types.ts';
import { SOURCE_CHUNK_BYTES } from './blobstore/checks.ts';

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

/**
 * The pack as one buffer, laid out independently of `PackLayout` (as packs were written when the
 * blobstore took one buffer): the bytes and the key a pack of these blocks must have.
 */
function onePiecePack(blocks: Block[]): { bytes: Uint8Array; key: string; frameEnds: number[]; dataOffsets: number[] } {
  const header = Uint8Array.of(0xa2, 0x65, ...new TextEncoder().encode('roots'), 0x80, 0x67, ...new TextEncoder().encode('version'), 0x01);
  let size = 1 + header.length;
  for (const b of blocks) size += varintLength(b.cid.length + b.data.length) + b.cid.length + b.data.length;
  const bytes = new Uint8Array(size);
  let pos = writeVarint(bytes, 0, header.length);
  bytes.set(header, pos);
  pos += header.length;
  const frameEnds = [pos];
  const dataOffsets: number[] = [];
  for (const b of blocks) {
    pos = writeVarint(bytes, pos, b.cid.length + b.data.length);
    bytes.set(b.cid, pos);
    bytes.set(b.data, pos + b.cid.length);
    dataOffsets.push(pos + b.cid.length);
    pos += b.cid.length + b.data.length;
    frameEnds.push(pos);
  }
  const sha = createHash('sha256').update(bytes).digest('hex');
  return { bytes, key: `packs/${sha.slice(0, 2)}/${sha}.car`, frameEnds, dataOffsets };
}

/** The blocks in the order a layout put them (by the offsets it gave each). */
function inPackOrder(blocks: Block[], offsets: ArrayLike<number>): Block[] {
  return blocks.map((b, i) => ({ b, at: offsets[i]! })).sort((x, y) => x.at - y.at).map((x) => x.b);
}

/**
 * `blocks` as a verifier holds them after reading their CAR in `chunkBytes` pieces: views into
 * the chunks, a block that straddles two copied into a buffer of its own (CID then data).
 */
function asReadFromCar(car: Uint8Array, chunkBytes: number, frames: { dataOffset: number; cidLength: number; length: number }[]): Block[] {
  const chunks: Uint8Array[] = [];
  for (let at = 0; at < car.length; at += chunkBytes) chunks.push(Uint8Array.from(car.subarray(at, at + chunkBytes)));
  return frames.map(({ dataOffset, cidLength, length }) => {
    const start = dataOffset - cidLength;
    const c = Math.floor(start / chunkBytes);
    if (Math.floor((dataOffset + length - 1) / chunkBytes) === c && length > 0) {
      const chunk = chunks[c]!;
      const at = start - c * chunkBytes;
      return { cid: chunk.subarray(at, at + cidLength), data: chunk.subarray(at + cidLength, at + cidLength + length) };
    }
    const own = Uint8Array.from(car.subarray(start, dataOffset + length));
    return { cid: own.subarray(0, cidLength), data: own.subarray(cidLength) };
  });
}

/** Raw blocks of `size` random bytes: a pack of a few of them spans several of the stores' chunks. */
async function bigBlocks(sizes: number[]): Promise<Block[]> {
  const out: Block[] = [];
  for (const size of sizes) {
    const data = new Uint8Array(randomBytes(size));
    out.push({ cid: (await createCid(0x55, data)).bytes, data });
  }
  return out;
}

/**
 * `store` with puts watched: the largest piece any put read of a source (0 when every body came
 * whole), and a put that fails after reading `failAfter` bytes of a source (when set).
 */
function watched(store: BlobStore): { store: BlobStore; largestRead: number; wholeBodies: number; failAfter?: number } {
  const w: { store: BlobStore; largestRead: number; wholeBodies: number; failAfter?: number } = { store, largestRead: 0, wholeBodies: 0 };
  w.store = new Proxy(store, {
    get(target, prop, receiver) {
      if (prop !== 'put') return Reflect.get(target, prop, receiver);
      return (key: string, body: Uint8Array | ByteSource) => {
        if (body instanceof Uint8Array) {
          w.wholeBodies++;
          return target.put(key, body);
        }
        let read = 0;
        const spy: ByteSource = {
          size: body.size,
          read(offset, into) {
            w.largestRead = Math.max(w.largestRead, into.length);
            if (w.failAfter !== undefined && read >= w.failAfter) throw new Error('the store failed part way through the upload');
            read += into.length;
            body.read(offset, into);
          },
        };
        return target.put(key, spy);
      };
    },
  });
  return w;
}

describe('PackWriter', () => {
  it('lays out the bytes and key one buffer would have, and reads any range of them', async () => {
    const blocks = [...(await makeBlocks(40, 'layout')), ...(await bigBlocks([SOURCE_CHUNK_BYTES - 7, 300_000, SOURCE_CHUNK_BYTES + 5]))];
    const ref = onePiecePack(blocks);
    // PackWriter keeps the order given; layOutPack chooses its own, which its offsets say.
    const pack = writerOf(blocks).finish();
    const laid = layOutPack(blocks.length, (i) => blocks[i]!.cid, (i) => blocks[i]!.data);
    const laidRef = onePiecePack(inPackOrder(blocks, laid.offsets));
    for (const [p, r] of [[pack, ref], [laid, laidRef]] as const) {
      expect(p.size).toBe(r.bytes.length);
      expect(p.key).toBe(r.key);
      expect(Buffer.from(bytesOf(p)).equals(Buffer.from(r.bytes))).toBe(true);
    }
    expect(pack.entries.map((e) => e.offset)).toEqual(blocks.map((_, i) => ref.dataOffsets[i]));
    expect(blocks.map((b) => hex(laidRef.bytes.subarray(laid.offsets[blocks.indexOf(b)]!, laid.offsets[blocks.indexOf(b)]! + b.data.length)))).toEqual(blocks.map((b) => hex(b.data)));
    // Ranges that start and end on and either side of every frame boundary, and random ones.
    const ranges: [number, number][] = [];
    const at = (p: number) => Math.min(ref.bytes.length, Math.max(0, p));
    for (const end of ref.frameEnds) for (const d of [-37, -1, 0, 1, 2]) ranges.push([at(end + d), 0], [at(end + d), 3], [at(end + d), 40]);
    for (let i = 0; i < 200; i++) {
      const offset = Math.floor(Math.random() * ref.bytes.length);
      ranges.push([offset, Math.floor(Math.random() * Math.min(3 * SOURCE_CHUNK_BYTES, ref.bytes.length - offset))]);
    }
    for (const [offset, n] of ranges) {
      const length = Math.min(n, ref.bytes.length - offset);
      const into = new Uint8Array(length);
      pack.read(offset, into);
      expect(Buffer.from(into).equals(Buffer.from(ref.bytes.subarray(offset, offset + length))), `${offset}+${length}`).toBe(true);
      laid.read(offset, into);
      expect(Buffer.from(into).equals(Buffer.from(laidRef.bytes.subarray(offset, offset + length))), `laid out ${offset}+${length}`).toBe(true);
    }
    expect(() => laid.read(ref.bytes.length - 2, new Uint8Array(3))).toThrow(RangeError);
    expect(() => laid.read(-1, new Uint8Array(1))).toThrow(RangeError);
  });

  it('asks for each block once, and reads the pack from where the blocks lie, in one buffer or many', async () => {
    const blocks = [...(await makeBlocks(30, 'asked')), ...(await bigBlocks([SOURCE_CHUNK_BYTES + 3]))];
    // The data of each block in a buffer of its own, the CIDs side by side in one arena (the store path's shapes).
    const arena = new Uint8Array(blocks.length * 36);
    blocks.forEach((b, i) => arena.set(b.cid, i * 36));
    const asked = { cid: 0, data: 0 };
    const laid = layOutPack(
      blocks.length,
      (i) => (asked.cid++, arena.subarray(i * 36, (i + 1) * 36)),
      (i) => (asked.data++, Uint8Array.from(blocks[i]!.data)),
    );
    const ref = onePiecePack(inPackOrder(blocks, laid.offsets));
    expect(laid.key).toBe(ref.key);
    for (let r = 0; r < 2; r++) expect(Buffer.from(bytesOf(laid)).equals(Buffer.from(ref.bytes))).toBe(true);
    expect(asked).toEqual({ cid: blocks.length, data: blocks.length });
    expect(laid.indexOf(blocks[17]!.cid)).toBe(17);
    expect(laid.indexOf(Uint8Array.of(1, 0x55, 0x12, 32, ...randomBytes(32)))).toBe(-1);
    expect(hex(laid.cidAt(5))).toBe(hex(blocks[5]!.cid));
  });

  it('lays out the same blocks as the same pack however the CAR that held them arrived in chunks', async () => {
    const blocks = [...(await makeBlocks(60, 'chunked')), ...(await bigBlocks([150_000, 40_000]))];
    const car = onePiecePack(blocks);
    const frames = blocks.map((b, i) => ({ dataOffset: car.dataOffsets[i]!, cidLength: b.cid.length, length: b.data.length }));
    const byCid = sortByCid(blocks.map((b, i) => ({ cid: b.cid, i }))).map((e) => e.i);
    const ref = onePiecePack(byCid.map((i) => blocks[i]!));
    for (const chunkBytes of [car.bytes.length, 64 * 1024, 1000, 37]) {
      const held = asReadFromCar(car.bytes, chunkBytes, frames);
      const laid = layOutPack(blocks.length, (k) => held[byCid[k]!]!.cid, (k) => held[byCid[k]!]!.data);
      expect(laid.key, `chunks of ${chunkBytes}`).toBe(ref.key);
      expect(Buffer.from(bytesOf(laid)).equals(Buffer.from(ref.bytes)), `chunks of ${chunkBytes}`).toBe(true);
    }
  });

  it('reads each CID from where it lies, whether just before its data or apart from it, in one pack', async () => {
    const blocks = [...(await makeBlocks(40, 'mixed')), ...(await bigBlocks([150_000]))];
    const car = onePiecePack(blocks);
    const frames = blocks.map((b, i) => ({ dataOffset: car.dataOffsets[i]!, cidLength: b.cid.length, length: b.data.length }));
    const held = asReadFromCar(car.bytes, 1000, frames);
    // Every third block's CID in an arena of its own, and every fifth one's data copied out alone
    // (its CID then apart from it); the rest as read from the CAR.
    const arena = new Uint8Array(blocks.length * 36);
    blocks.forEach((b, i) => arena.set(b.cid, i * 36));
    const cidOf = (i: number) => (i % 3 === 0 ? arena.subarray(i * 36, (i + 1) * 36) : held[i]!.cid);
    const dataOf = (i: number) => (i % 5 === 0 ? Uint8Array.from(held[i]!.data) : held[i]!.data);
    const laid = layOutPack(blocks.length, cidOf, dataOf);
    const ref = onePiecePack(inPackOrder(blocks, laid.offsets));
    expect(laid.key).toBe(ref.key);
    expect(Buffer.from(bytesOf(laid)).equals(Buffer.from(ref.bytes))).toBe(true);
    for (let i = 0; i < blocks.length; i++) {
      expect(hex(laid.cidAt(i))).toBe(hex(blocks[i]!.cid));
      expect(laid.indexOf(blocks[i]!.cid)).toBe(i);
    }
  });

  it('lays out blocks held in more than 65,536 arrays', () => {
    // Past 65,536 memories the layout keeps their ids in 32 bits: a block whose id were cut to 16
    // would be read from another block's array.
    const count = 70_000;
    const cids = new Uint8Array(count * 36);
    const data: Uint8Array[] = [];
    for (let i = 0; i < count; i++) {
      cids.set([1, 0x55, 0x12, 32], i * 36);
      cids.set(createHash('sha256').update(String(i)).digest(), i * 36 + 4);
      data.push(Uint8Array.of(i & 0xff, (i >> 8) & 0xff, i >> 16));
    }
    const blocks = data.map((d, i) => ({ cid: cids.subarray(i * 36, (i + 1) * 36), data: d }));
    const laid = layOutPack(count, (i) => blocks[i]!.cid, (i) => blocks[i]!.data);
    const ref = onePiecePack(inPackOrder(blocks, laid.offsets));
    expect(laid.key).toBe(ref.key);
    // A pack under 4 GiB keeps its offsets in 32 bits.
    expect(laid.offsets).toBeInstanceOf(Uint32Array);
    const into = new Uint8Array(3);
    for (const i of [0, 65_535, 65_536, 65_537, count - 1]) {
      laid.read(laid.offsets[i]!, into);
      expect([...into]).toEqual([...data[i]!]);
      expect(hex(laid.cidAt(i))).toBe(hex(blocks[i]!.cid));
    }
  });

  it('lays out blocks read from a CAR in the order they lie there, copying runs of frames whole', async () => {
    const blocks = [...(await makeBlocks(60, 'framed')), ...(await bigBlocks([150_000, 40_000]))];
    const car = onePiecePack(blocks);
    const frames = blocks.map((b, i) => ({ dataOffset: car.dataOffsets[i]!, cidLength: b.cid.length, length: b.data.length }));
    // Given in the CAR's order, as views into the CAR: whole, or in chunks.
    for (const chunkBytes of [car.bytes.length, 64 * 1024, 1000]) {
      const held = asReadFromCar(car.bytes, chunkBytes, frames);
      const laid = layOutPack(blocks.length, (k) => held[k]!.cid, (k) => held[k]!.data);
      const ref = onePiecePack(inPackOrder(blocks, laid.offsets));
      expect(laid.key, `chunks of ${chunkBytes}`).toBe(ref.key);
      expect(Buffer.from(bytesOf(laid)).equals(Buffer.from(ref.bytes)), `chunks of ${chunkBytes}`).toBe(true);
      // Held in one piece, the pack is the CAR's frames as they were.
      if (chunkBytes === car.bytes.length) expect(laid.key).toBe(car.key);
      for (let at = 0; at < ref.bytes.length; at += 997) {
        const into = new Uint8Array(Math.min(5000, ref.bytes.length - at));
        laid.read(at, into);
        expect(Buffer.from(into).equals(Buffer.from(ref.bytes.subarray(at, at + into.length))), `${chunkBytes}: ${at}`).toBe(true);
      }
    }
  });

  it('writes a CARv1 that @ipld/car reads back block for block, with offsets at the block data', async () => {
    const blocks = await makeBlocks(50, 'car');
    const writer = new PackWriter();
    for (const b of blocks) expect(writer.add(b.cid, b.data)).toBe(true);
    // Deduplicated by CID, even from a different array holding the same bytes.
    expect(writer.add(Uint8Array.from(blocks[3]!.cid), blocks[3]!.data)).toBe(false);
    expect(writer.blockCount).toBe(blocks.length);

    const pack = writer.finish();
    const bytes = bytesOf(pack);
    expect(pack.size).toBe(writer.byteLength);
    expect(bytes.length).toBe(writer.byteLength);
    expect(writer.finish()).toBe(pack);
    expect(() => writer.add(blocks[0]!.cid, blocks[0]!.data)).toThrow(/after finish/);

    const sha = createHash('sha256').update(bytes).digest('hex');
    expect(pack.key).toBe(`packs/${sha.slice(0, 2)}/${sha}.car`);

    const reader = await CarReader.fromBytes(bytes);
    expect(await reader.getRoots()).toEqual([]);
    const read: { cid: string; data: string }[] = [];
    for await (const b of reader.blocks()) read.push({ cid: hex(b.cid.bytes), data: hex(b.bytes) });
    expect(read).toEqual(blocks.map((b) => ({ cid: hex(b.cid), data: hex(b.data) })));

    const indexer = await CarIndexer.fromBytes(bytes);
    const offsets: { cid: string; offset: number; length: number }[] = [];
    for await (const e of indexer) offsets.push({ cid: hex(e.cid.bytes), offset: e.blockOffset, length: e.blockLength });
    expect(pack.entries.map((e) => ({ cid: hex(e.cid), offset: e.offset, length: e.length }))).toEqual(offsets);
    for (const [i, e] of pack.entries.entries()) {
      expect(hex(bytes.subarray(e.offset, e.offset + e.length))).toBe(hex(blocks[i]!.data));
    }
  });

  it('writes an empty pack as a valid CAR with no blocks', async () => {
    const pack = new PackWriter().finish();
    expect(pack.entries).toEqual([]);
    const reader = await CarReader.fromBytes(bytesOf(pack));
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

  it('puts a pack of several MiB a chunk at a time, byte for byte under the key one buffer would have', async () => {
    const big = [...(await makeBlocks(20, 'big')), ...(await bigBlocks([900_000, 900_000, 900_000, 70_000]))];
    const ref = onePiecePack(big);
    const w = watched(store);
    const stored = await withTransaction(pool, (c) => storePack(w.store, c, writerOf(big)));
    expect(stored!.key).toBe(ref.key);
    expect(stored!.sizeBytes).toBe(ref.bytes.length);
    expect(Buffer.from((await store.get(ref.key))!).equals(Buffer.from(ref.bytes))).toBe(true);
    // Read a chunk at a time, never whole.
    expect(w.wholeBodies).toBe(0);
    expect(w.largestRead).toBeGreaterThan(0);
    expect(w.largestRead).toBeLessThanOrEqual(SOURCE_CHUNK_BYTES);
    for (const b of big) {
      const loc = (await locateBlock(pool, b.cid))!;
      expect(Buffer.from(await readBlock(store, loc.packKey, loc.offset, loc.length, b.cid)).equals(Buffer.from(b.data))).toBe(true);
    }
  });

  it('indexes nothing when the upload fails part way, and what was stored before still reads', async () => {
    const extra = [...(await makeBlocks(5, 'failed-upload')), ...(await bigBlocks([1_500_000, 800_000]))];
    const key = onePiecePack(extra).key;
    const w = watched(store);
    w.failAfter = SOURCE_CHUNK_BYTES;
    const packsBefore = (await pool.query('SELECT count(*)::int AS n FROM packs')).rows;
    await expect(withTransaction(pool, (c) => storePack(w.store, c, writerOf(extra)))).rejects.toThrow(/failed part way/);
    expect(await store.has(key)).toBe(false);
    for (const b of extra) expect(await locateBlock(pool, b.cid)).toBeNull();
    expect((await pool.query('SELECT count(*)::int AS n FROM packs')).rows).toEqual(packsBefore);
    for (const b of blocks.slice(0, 5)) {
      const loc = (await locateBlock(pool, b.cid))!;
      expect(hex(await readBlock(store, loc.packKey, loc.offset, loc.length, b.cid))).toBe(hex(b.data));
    }
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
