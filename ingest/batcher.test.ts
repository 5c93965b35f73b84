import { describe, expect, it, vi } from 'vitest';
import type { RepoChange } from './changes.ts';

// The batcher's scheduling, apart from what a batch stores: storeBatch answers when the test says.
const calls: Array<{ dids: string[]; finish: () => void; fail: (err: Error) => void }> = [];
vi.mock('./store.ts', () => ({
  storeBatch: (_deps: unknown, changes: Array<{ did: string }>) =>
    new Promise((resolve, reject) => {
      calls.push({
        dids: changes.map((c) => c.did),
        fail: reject,
        finish: () => resolve({ packKey: undefined, outcomes: changes.map(() => ({ kind: 'skipped' })), perChange: changes.map(() => ({ newBlocks: 0, blockBytes: 0 })) }),
      });
    }),
}));
const { StoreBatcher } = await import('./batcher.ts');

const change = (did: string) => ({ kind: 'account', did }) as unknown as RepoChange;
const tick = () => new Promise((r) => setImmediate(r));
const settle = async () => {
  for (let i = 0; i < 5; i++) await tick();
};

describe('StoreBatcher maxInFlight', () => {
  it('stores one batch at a time by default: the next waits for the one in flight', async () => {
    calls.length = 0;
    const batcher = new StoreBatcher({} as never, { filter: {} as never, origin: 'backfill' }, { maxChanges: 2, maxBlocks: 100 });
    const answers = ['a', 'b', 'c', 'd'].map((d) => batcher.submit(change(d)));
    await settle();
    expect(calls.map((c) => c.dids)).toEqual([['a', 'b']]);
    calls[0]!.finish();
    await settle();
    expect(calls.map((c) => c.dids)).toEqual([['a', 'b'], ['c', 'd']]);
    calls[1]!.finish();
    expect((await Promise.all(answers)).map((a) => a.outcome.kind)).toEqual(['skipped', 'skipped', 'skipped', 'skipped']);
  });

  it('with maxInFlight 2, stores a second batch while the first is in flight, never a third', async () => {
    calls.length = 0;
    const batcher = new StoreBatcher({} as never, { filter: {} as never, origin: 'backfill' }, { maxChanges: 2, maxBlocks: 100, maxInFlight: 2 });
    const answers = ['a', 'b', 'c', 'd', 'e', 'f'].map((d) => batcher.submit(change(d)));
    await settle();
    expect(calls.map((c) => c.dids)).toEqual([['a', 'b'], ['c', 'd']]);
    // The second finishing first frees a slot as well: batches commit in any order.
    calls[1]!.finish();
    await settle();
    expect(calls.map((c) => c.dids)).toEqual([['a', 'b'], ['c', 'd'], ['e', 'f']]);
    const later = batcher.submit(change('g'));
    batcher.endOfInput();
    await settle();
    expect(calls).toHaveLength(3);
    calls[0]!.finish();
    await settle();
    expect(calls.map((c) => c.dids).at(-1)).toEqual(['g']);
    calls[2]!.finish();
    calls[3]!.finish();
    expect((await Promise.all([...answers, later])).length).toBe(7);
  });

  it('once input has ended, shares what is left among the free batch slots, none under 32', async () => {
    calls.length = 0;
    const batcher = new StoreBatcher({} as never, { filter: {} as never, origin: 'backfill' }, { maxChanges: 256, maxBlocks: 100_000, gatherMs: 60_000, maxInFlight: 2 });
    const dids = Array.from({ length: 100 }, (_, i) => `d${i}`);
    const answers = dids.map((d) => batcher.submit(change(d)));
    await settle();
    // Gathering: nothing stored until input ends.
    expect(calls).toHaveLength(0);
    batcher.endOfInput();
    await settle();
    expect(calls.map((c) => c.dids.length)).toEqual([50, 50]);
    expect(calls.flatMap((c) => c.dids)).toEqual(dids);
    for (const c of calls) c.finish();
    await Promise.all(answers);

    // Forty left: one batch, not two of twenty.
    calls.length = 0;
    const small = new StoreBatcher({} as never, { filter: {} as never, origin: 'backfill' }, { maxChanges: 256, maxBlocks: 100_000, gatherMs: 60_000, maxInFlight: 2 });
    const more = Array.from({ length: 40 }, (_, i) => small.submit(change(`e${i}`)));
    small.endOfInput();
    await settle();
    expect(calls.map((c) => c.dids.length)).toEqual([40]);
    for (const c of calls) c.finish();
    await Promise.all(more);
  });

  it('a batch that fails rejects its own callers only', async () => {
    calls.length = 0;
    const batcher = new StoreBatcher({} as never, { filter: {} as never, origin: 'backfill' }, { maxChanges: 1, maxBlocks: 100, maxInFlight: 2 });
    const a = batcher.submit(change('a'));
    const b = batcher.submit(change('b'));
    await settle();
    expect(calls).toHaveLength(2);
    calls[0]!.fail(new Error('connection lost'));
    await expect(a).rejects.toThrow('connection lost');
    calls[1]!.finish();
    await expect(b).resolves.toMatchObject({ outcome: { kind: 'skipped' } });
    // The batcher goes on after a failed batch.
    const c = batcher.submit(change('c'));
    await settle();
    calls[2]!.finish();
    await expect(c).resolves.toMatchObject({ outcome: { kind: 'skipped' } });
  });
});
