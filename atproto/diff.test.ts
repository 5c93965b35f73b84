import { describe, expect, it } from 'vitest';
import { type RecordRef, diffRecordStream, diffRecords } from './diff.ts';

const ref = (path: string, cid: string): RecordRef => {
  const slash = path.indexOf('/');
  return { collection: path.slice(0, slash), rkey: path.slice(slash + 1), cid };
};
const asMap = (refs: RecordRef[]) => new Map(refs.map((r) => [`${r.collection}/${r.rkey}`, r.cid]));

const stored = [ref('app.bsky.feed.like/a', 'c1'), ref('app.bsky.feed.like/b', 'c2'), ref('app.bsky.feed.post/a', 'c3'), ref('app.bsky.feed.post/c', 'c4')];
const current = [ref('app.bsky.feed.like/b', 'c2'), ref('app.bsky.feed.like/c', 'c5'), ref('app.bsky.feed.post/a', 'c6'), ref('app.bsky.feed.post/c', 'c4')];

describe('diffRecords', () => {
  it('finds creates, updates, deletes and counts unchanged', () => {
    const expected = {
      creates: [ref('app.bsky.feed.like/c', 'c5')],
      updates: [{ ...ref('app.bsky.feed.post/a', 'c6'), prev: 'c3' }],
      deletes: [ref('app.bsky.feed.like/a', 'c1')],
      unchanged: 2,
    };
    expect(diffRecords(stored, current)).toEqual(expected);
    expect(diffRecords(asMap(stored), current)).toEqual(expected);
  });

  it('handles empty sides', () => {
    expect(diffRecords([], [])).toEqual({ creates: [], updates: [], deletes: [], unchanged: 0 });
    expect(diffRecords([], current).creates).toEqual(current);
    expect(diffRecords(stored, []).deletes).toEqual(stored);
    expect(diffRecords(new Map(), current).creates).toEqual(current);
    expect(diffRecords(asMap(stored), []).deletes).toEqual(stored);
    expect(diffRecords(stored, stored).unchanged).toBe(4);
  });

  it('streams the changes in path order, returning the unchanged count', () => {
    const changes = diffRecordStream(stored, current);
    const seen = [];
    let step = changes.next();
    for (; !step.done; step = changes.next()) seen.push(`${step.value.kind} ${step.value.collection}/${step.value.rkey}`);
    expect(seen).toEqual(['delete app.bsky.feed.like/a', 'create app.bsky.feed.like/c', 'update app.bsky.feed.post/a']);
    expect(step.value).toBe(2);
  });

  it('orders by the path bytes, as the MST does, not by (collection, rkey)', () => {
    // '-' (0x2d) sorts before '/' (0x2f): "a.b.c-d/x" < "a.b.c/y", though "a.b.c" < "a.b.c-d".
    const mst = [ref('com.example.c-d/x', '1'), ref('com.example.c/y', '2')];
    expect(diffRecords(mst, mst).unchanged).toBe(2);
    const byColumns = [ref('com.example.c/y', '2'), ref('com.example.c-d/x', '1')];
    expect(() => diffRecords(byColumns, mst)).toThrow('stored records are not in path order');
  });

  it('refuses unsorted or duplicated input rather than report wrong changes', () => {
    expect(() => diffRecords([...stored].reverse(), current)).toThrow('stored records are not in path order');
    expect(() => diffRecords(stored, [current[0]!, current[0]!])).toThrow('current records are not in path order');
    expect(() => diffRecords(asMap(stored), [...current].reverse())).toThrow('current records are not in path order');
  });

  it('diffs 200,000 records each side: creates, deletes, updates and unchanged counted exactly', () => {
    const a: RecordRef[] = [];
    const b: RecordRef[] = [];
    for (let i = 0; i < 200_000; i++) {
      const path = `app.bsky.feed.post/${String(i).padStart(13, '0')}`;
      if (i % 10 !== 0) a.push({ ...ref(path, `x${i}`), path });
      if (i % 10 !== 1) b.push({ ...ref(path, i % 10 === 2 ? `y${i}` : `x${i}`), path });
    }
    const diff = diffRecords(a, b);
    expect([diff.creates.length, diff.deletes.length, diff.updates.length]).toEqual([20_000, 20_000, 20_000]);
    expect(diff.unchanged).toBe(140_000);
  });
});
