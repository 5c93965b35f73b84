import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { LocationTable } from './locations.ts';
import { PackedEvents, readLocs, readLocsInto } from './packed.ts';

const cid = () => Buffer.from([1, 0x71, 0x12, 0x20, ...randomBytes(32)]);
const int4 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
const int8 = (n: number) => {
  const b = Buffer.alloc(8);
  b.writeBigInt64BE(BigInt(n));
  return b;
};
/** One `LOC_SQL` row, as `int4send`/`int8send` write it. */
const loc = (c: Buffer, offset: number, length: number, refcount: number) => Buffer.concat([int4(c.length), c, int8(offset), int4(length), int8(refcount)]);

describe('packed rows', () => {
  // Past 2^32 the high half counts; a wrong half (or sign) shows.
  const values = [
    [0, 10, 1],
    [2 ** 32 - 1, 7, 2 ** 31],
    [2 ** 40 + 5, 2 ** 31 - 1, 2 ** 33 + 1],
    [Number.MAX_SAFE_INTEGER, 1, 0],
  ] as const;

  it('block locations read back exactly, as pairs and into a table', () => {
    const cids = values.map(cid);
    const packed = Buffer.concat(values.map(([o, l, r], i) => loc(cids[i]!, o, l, r)));
    const pack = { id: 3, key: 'packs/ab/x.car', size: 99 };
    expect(readLocs(packed, pack)).toEqual(values.map(([offset, length, refcount], i) => [cids[i], { packId: 3, packKey: pack.key, packSize: 99, offset, length, refcount }]));
    const table = new LocationTable();
    readLocsInto(packed, table, pack);
    expect(table.size).toBe(values.length);
    for (const [i, [offset, length, refcount]] of values.entries()) expect(table.get(cids[i]!)).toEqual({ packId: 3, packKey: pack.key, packSize: 99, offset, length, refcount });
  });

  it('event ids read back exactly', () => {
    const text = (s: string) => Buffer.concat([int4(Buffer.byteLength(s)), Buffer.from(s)]);
    const c = cid();
    const packed = Buffer.concat(values.map(([id]) => Buffer.concat([int8(id), text('create'), text('app.bsky.feed.post'), text('3kabc'), int4(c.length), c])));
    const events = new PackedEvents(packed);
    expect(events.read(0, events.length).map((e) => e.id)).toEqual(values.map(([id]) => String(id)));
  });
});
