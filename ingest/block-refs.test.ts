import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BlockRefs } from './block-refs.ts';

function cid(codec: number, digest: Uint8Array): Uint8Array {
  return Uint8Array.from([1, codec, 0x12, 0x20, ...digest]);
}

/** Entries with duplicates and shared 32-bit digest prefixes, grouped by BlockRefs and by hand. */
function check(codecs: number[], entries = 1000) {
  const refs = new BlockRefs();
  const data = new Map<string, Uint8Array>();
  const expected = new Map<string, { delta: number; owner: number }>();
  const distinct: Uint8Array[] = [];
  for (let i = 0; i < 300; i++) {
    const digest = randomBytes(32);
    if (i % 7 === 0 && distinct.length > 0) digest.set(distinct[distinct.length - 1]!.subarray(4, 8)); // same prefix, other bytes
    distinct.push(cid(codecs[i % codecs.length]!, digest));
  }
  for (let k = 0; k < entries; k++) {
    const c = distinct[(k * 7919) % distinct.length]!;
    const key = Buffer.from(c).toString('hex');
    const e = expected.get(key) ?? { delta: 0, owner: -1 };
    const owner = k % 5;
    if (k % 3 === 0) {
      const bytes = Uint8Array.of(k & 255);
      refs.looseBlock(c, 0, 2, bytes, owner);
      e.delta += 2;
      if (e.owner < 0 || owner < e.owner) {
        e.owner = owner;
        data.set(key, bytes);
      }
    } else {
      // A CID inside a larger array, as the stored records' CIDs are passed.
      const within = new Uint8Array(36 * 3);
      within.set(c, 36 * (k % 3));
      refs.ref(within, 36 * (k % 3), -1);
      e.delta -= 1;
    }
    expected.set(key, e);
  }
  const g = refs.group();
  const keys = [...expected.keys()].sort((a, b) => Buffer.compare(Buffer.from(a, 'hex'), Buffer.from(b, 'hex')));
  expect(g.count).toBe(keys.length);
  keys.forEach((key, i) => {
    expect(Buffer.from(g.cidAt(i)).toString('hex')).toBe(key);
    expect(Buffer.from(g.cidAt(i)).toString('hex')).toBe(key);
    expect(g.delta[i]).toBe(expected.get(key)!.delta);
    expect(g.ownerAt(i)).toBe(expected.get(key)!.owner);
    expect(g.carried[i]).toBe(expected.get(key)!.owner >= 0 ? 1 : 0);
    if (g.carried[i]) expect(g.dataAt(i)).toBe(data.get(key));
  });
}

/** Blocks of a source (as a verified repo's block map gives them: CID then data, in one buffer), with references to some of them. */
function checkSource() {
  const refs = new BlockRefs();
  const n = 500;
  const buffer = new Uint8Array(n * 40);
  const starts: number[] = [];
  for (let i = 0; i < n; i++) {
    buffer.set(cid(i % 2 ? 0x71 : 0x55, randomBytes(32)), i * 40);
    buffer.set(Uint8Array.of(i & 255, 1, 2, 3), i * 40 + 36);
    starts.push(i * 40);
  }
  const source = refs.source({ dataAt: (i) => buffer.subarray(starts[i]! + 36, starts[i]! + 40), startAt: (i) => starts[i]!, buffers: [buffer], bufferIndexAt: () => 0 });
  refs.reserve(n);
  // Each block once from the source (owner 3), the even ones also loose from an earlier change
  // (owner 1, its bytes win), every third also released by a reference.
  const loose = new Map<number, Uint8Array>();
  for (let i = 0; i < n; i++) {
    refs.block(source, i, 2, 3);
    if (i % 2 === 0) {
      const bytes = Uint8Array.of(9, i & 255);
      loose.set(i, bytes);
      refs.looseBlock(buffer, starts[i]!, 0, bytes, 1);
    }
    if (i % 3 === 0) refs.ref(Uint8Array.from(buffer.subarray(starts[i]!, starts[i]! + 36)), 0, -1);
  }
  const g = refs.group();
  expect(g.count).toBe(n);
  const byCid = [...Array(n).keys()].sort((a, b) => Buffer.compare(buffer.subarray(starts[a]!, starts[a]! + 36), buffer.subarray(starts[b]!, starts[b]! + 36)));
  byCid.forEach((i, k) => {
    expect(Buffer.from(g.cidAt(k)).equals(buffer.subarray(starts[i]!, starts[i]! + 36))).toBe(true);
    expect(g.delta[k]).toBe(i % 3 === 0 ? 1 : 2);
    expect(g.carried[k]).toBe(1);
    expect(g.ownerAt(k)).toBe(i % 2 === 0 ? 1 : 3);
    expect(Buffer.from(g.dataAt(k)).equals(i % 2 === 0 ? loose.get(i)! : buffer.subarray(starts[i]! + 36, starts[i]! + 40))).toBe(true);
  });
  return { g, buffer, loose };
}

describe('BlockRefs.group', () => {
  it('reads the CIDs of a source\'s blocks where they lie, and keeps the bytes of the lowest owner', () => checkSource());
  it('sorts by CID bytes and sums each CID, keeping the bytes of the lowest owner (dag-cbor and raw)', () => check([0x71, 0x55]));
  it('does the same for CIDs of other codecs (the comparator path)', () => check([0x71, 0x70, 0x55]));
  it('does the same past the room it starts with', () => check([0x71, 0x55], 5000));
  it('frees the groups when released, and nothing the caller passed', () => {
    const { g, buffer, loose } = checkSource();
    const held = Uint8Array.from(buffer);
    const before = process.memoryUsage().arrayBuffers;
    g.release();
    // Its arrays are gone at once (no collection ran): a few bytes a group of 500.
    expect(g.delta.length).toBe(0);
    expect(g.carried.length).toBe(0);
    expect(before - process.memoryUsage().arrayBuffers).toBeGreaterThanOrEqual(17 * 500);
    // The source's buffer and the loose blocks' bytes are the caller's: untouched.
    expect(Buffer.from(buffer).equals(held)).toBe(true);
    for (const bytes of loose.values()) expect(bytes.length).toBe(2);
  });
});
