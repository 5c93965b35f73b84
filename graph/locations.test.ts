import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { LocationTable } from './locations.ts';

const cid = () => Uint8Array.from([1, 0x71, 0x12, 0x20, ...randomBytes(32)]);

describe('LocationTable', () => {
  it('finds nothing while empty, then every block added, by adds one at a time or after a reserve', () => {
    for (const reserve of [0, 3, 1000]) {
      const t = new LocationTable();
      expect(t.get(cid())).toBeUndefined();
      if (reserve) t.reserve(reserve);
      const p = t.pack(7, 'packs/aa/x.car', 5000);
      const cids = Array.from({ length: 300 }, cid);
      for (const [i, c] of cids.entries()) t.add(c, 0, p, i * 10, 10, i % 3);
      // A CID added again keeps its first location.
      t.add(cids[5]!, 0, p, 99_999, 1, 9);
      expect(t.size).toBe(300);
      for (const [i, c] of cids.entries()) expect(t.get(c)).toEqual({ packId: 7, packKey: 'packs/aa/x.car', packSize: 5000, offset: i * 10, length: 10, refcount: i % 3 });
      expect(t.get(cid())).toBeUndefined();
    }
  });
});
