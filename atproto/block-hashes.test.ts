import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BlockHashMismatchError } from './errors.ts';
import { DeferredBlockHashes, checkBlockHash } from './block-hashes.ts';
import { cidToString } from './cid.ts';

/** `count` raw blocks of `size` bytes framed CID-first, side by side in one buffer; their starts. */
function blocksIn(count: number, size: number): { buf: Uint8Array; starts: number[] } {
  const buf = new Uint8Array(count * (36 + size));
  const starts: number[] = [];
  for (let i = 0; i < count; i++) {
    const at = i * (36 + size);
    const data = randomBytes(size);
    buf.set([1, 0x55, 0x12, 0x20], at);
    buf.set(createHash('sha256').update(data).digest(), at + 4);
    buf.set(data, at + 36);
    starts.push(at);
  }
  return { buf, starts };
}

describe('DeferredBlockHashes', () => {
  it('checks in slices, letting the event loop run between them, and finds the first bad block in order', async () => {
    const size = 1024;
    const { buf, starts } = blocksIn(30_000, size);
    const good = new DeferredBlockHashes();
    for (const at of starts) good.add(buf, at, at + 36 + size);
    expect(good.unchecked).toBe(starts.length);
    let done = false;
    let turns = 0;
    const spin = () => {
      if (done) return;
      turns++;
      setImmediate(spin);
    };
    setImmediate(spin);
    await good.inBackground().finally(() => (done = true));
    expect(good.unchecked).toBe(0);
    // 30 MB in 30,000 calls is many slices of 4 ms: other callbacks ran between them.
    expect(turns).toBeGreaterThan(1);

    // Two bad blocks: the earlier one is named, in the background and at once.
    const bad = Uint8Array.from(buf);
    const [first, second] = [starts[20_000]!, starts[25_000]!];
    bad[second + 40]! ^= 1;
    bad[first + 40]! ^= 1;
    expect(() => checkBlockHash(bad, first, first + 36 + size)).toThrow(BlockHashMismatchError);
    const hashes = new DeferredBlockHashes();
    for (const at of starts) hashes.add(bad, at, at + 36 + size);
    await expect(hashes.inBackground()).rejects.toThrow(`block ${cidToString(bad, first)}`);
    expect(() => hashes.checkNow()).toThrow(`block ${cidToString(bad, first)}`);
  });
});
