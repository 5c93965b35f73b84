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
    expect(Buffer.from(g.cids.subarray(i * 36, (i + 1) * 36)).toString('hex')).toBe(key);
    expect(g.delta[i]).toBe(expected.get(key)!.delta);
    expect(g.owner[i]).toBe(expected.get(key)!.owner);
    expect(g.carried[i]).toBe(expected.get(key)!.owner >= 0 ? 1 : 0);
    if (g.carried[i]) expect(g.dataAt(i)).toBe(data.get(key));
  });
}

describe('BlockRefs.group', () => {
  it('sorts by CID bytes and sums each CID, keeping the bytes of the lowest owner (dag-cbor and raw)', () => check([0x71, 0x55]));
  it('does the same for CIDs of other codecs (the comparator path)', () => check([0x71, 0x70, 0x55]));
  it('does the same past the room it starts with', () => check([0x71, 0x55], 5000));
});
