import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import * as CID from '@atcute/cid';
import { BlockMap } from './block-map.ts';
import { cidFromString, cidToString } from './cid.ts';
import { cidFor } from './testing/car-edit.ts';

/** A buffer laid out like CAR entries (CID then data), and where each block sits. */
function blocks(n: number) {
  const parts: Uint8Array[] = [];
  const at: { cid: string; start: number; end: number; data: Uint8Array }[] = [];
  let pos = 0;
  for (let i = 0; i < n; i++) {
    const data = randomBytes(20 + (i % 50));
    const cid = CID.fromString(cidFor(data, i % 3 === 0 ? 0x55 : 0x71)).bytes;
    parts.push(cid, data);
    at.push({ cid: cidFor(data, i % 3 === 0 ? 0x55 : 0x71), start: pos, end: pos + 36 + data.length, data });
    pos += 36 + data.length;
  }
  return { buffer: new Uint8Array(Buffer.concat(parts)), at };
}

describe('cidToString / cidFromString', () => {
  it('match @atcute/cid for both codecs', () => {
    for (let i = 0; i < 500; i++) {
      const cid = CID.fromDigest(i % 2 ? 0x71 : 0x55, randomBytes(32));
      const buffer = Buffer.concat([randomBytes(i % 7), cid.bytes]);
      expect(cidToString(buffer, i % 7)).toBe(CID.toString(cid));
      expect(Buffer.from(cidFromString(CID.toString(cid))!).equals(cid.bytes)).toBe(true);
    }
  });

  it('refuse what is not a repo CID', () => {
    expect(cidFromString('not a cid')).toBeUndefined();
    expect(cidFromString('QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG')).toBeUndefined();
  });
});

describe('BlockMap', () => {
  it('finds every block by CID string and by CID bytes, through growth and rehashing', () => {
    const { buffer, at } = blocks(5000);
    const map = new BlockMap();
    for (const b of at) expect(map.add(buffer, b.start, b.end)).toBe(true);
    expect(map.size).toBe(5000);
    for (const [i, b] of at.entries()) {
      expect(Buffer.from(map.get(b.cid)!).equals(b.data)).toBe(true);
      expect(map.has(b.cid)).toBe(true);
      expect(map.indexOf(buffer, b.start)).toBe(i);
      expect(map.cidStringAt(i)).toBe(b.cid);
    }
    expect(map.get(cidFor(new Uint8Array([1, 2, 3])))).toBeUndefined();
    expect(map.has('bogus')).toBe(false);
  });

  it('keeps the first copy of a duplicate and iterates like a Map, in insertion order', () => {
    const { buffer, at } = blocks(10);
    const map = new BlockMap();
    for (const b of at) map.add(buffer, b.start, b.end);
    expect(map.add(buffer, at[4]!.start, at[4]!.end)).toBe(false);
    expect(map.size).toBe(10);
    expect([...map.keys()]).toEqual(at.map((b) => b.cid));
    expect([...map].map(([cid, data]) => [cid, Buffer.from(data).toString('hex')])).toEqual(
      at.map((b) => [b.cid, Buffer.from(b.data).toString('hex')]),
    );
    expect([...map.carBlocks()].map((b) => CID.toString(CID.decode(b.cid)))).toEqual(at.map((b) => b.cid));
  });

  it('retains only the blocks asked for', () => {
    const { buffer, at } = blocks(100);
    const map = new BlockMap();
    for (const b of at) map.add(buffer, b.start, b.end);
    const keep = new Uint8Array(100).map((_, i) => (i % 3 === 0 ? 1 : 0));
    map.retain(keep);
    expect(map.size).toBe(34);
    for (const [i, b] of at.entries()) expect(map.has(b.cid)).toBe(i % 3 === 0);
  });

  it('trimmed to its blocks, lets go of its spare room and still finds them, and grows again', () => {
    const { buffer, at } = blocks(3000);
    const map = new BlockMap();
    for (const b of at.slice(0, 2100)) map.add(buffer, b.start, b.end);
    const before = map.indexBytes;
    map.trim();
    // Three arrays of four bytes a block: room for 4,096 blocks was made, 2,100 are kept.
    expect(before - map.indexBytes).toBe(12 * (4096 - 2100));
    for (const [i, b] of at.slice(0, 2100).entries()) expect(map.indexOf(buffer, b.start)).toBe(i);
    for (const b of at.slice(2100)) expect(map.add(buffer, b.start, b.end)).toBe(true);
    for (const [i, b] of at.entries()) {
      expect(map.indexOf(buffer, b.start)).toBe(i);
      expect(map.bufferAt(i)).toBe(map.buffers[map.bufferIndexAt(i)]);
    }
  });
});
