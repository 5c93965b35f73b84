import { describe, expect, it } from 'vitest';
import { BlockMap } from './block-map.ts';
import { RecordList } from './record-list.ts';

describe('RecordList', () => {
  it('gives each record its collection, rkey and path, read in any order, before and after trimming', () => {
    const list = new RecordList(new BlockMap());
    const records: { collection: string; rkey: string; block: number }[] = [];
    const collections = ['app.bsky.actor.profile', 'app.bsky.feed.like', 'app.bsky.feed.post', 'app.bsky.graph.follow'];
    for (const [c, collection] of collections.entries()) {
      // Collections of 1, 40, 300 and 7 records: runs that start and end inside the lists' first room and past it.
      const n = [1, 40, 300, 7][c]!;
      for (let i = 0; i < n; i++) records.push({ collection, rkey: `3k${String(i).padStart(6, '0')}${'x'.repeat(i % 5)}`, block: records.length * 3 });
    }
    for (const r of records) list.pushPath(`${r.collection}/${r.rkey}`, r.collection, r.block);
    const check = () => {
      expect(list.length).toBe(records.length);
      expect(list.collections()).toEqual(collections);
      expect(list.keyBytes).toBe(records.reduce((n, r) => n + r.collection.length + 1 + r.rkey.length, 0));
      // Backwards, then at strides: the collection is found whatever was read before.
      for (let i = records.length - 1; i >= 0; i--) expect(list.collectionAt(i)).toBe(records[i]!.collection);
      for (let i = 0; i < records.length; i += 37) {
        const r = records[i]!;
        expect([list.collectionAt(i), list.rkeyAt(i), list.pathAt(i), list.blockAt(i)]).toEqual([r.collection, r.rkey, `${r.collection}/${r.rkey}`, r.block]);
      }
      expect(records.map((_, i) => list.pathAt(i))).toEqual(records.map((r) => `${r.collection}/${r.rkey}`));
    };
    check();
    list.trim();
    check();
  });
});
