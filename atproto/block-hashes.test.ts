import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BlockHashMismatchError } from './errors.ts';
import { DeferredBlockHashes, checkBlockHash } from './block-hashes.ts';
import { cidToString } from './cid.ts';
import { BlockMap } from './block-map.ts';

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

  it('checks the blocks a map took from the map, and the others in their place among them', () => {
    const size = 64;
    const { buf, starts } = blocksIn(10, size);
    const bad = Uint8Array.from(buf);
    // A second copy of block 3 (a duplicate CID, which the map does not take) with a wrong byte,
    // read after block 5; block 8 is bad too: the duplicate comes first in the CAR.
    const dup = Uint8Array.from(bad.subarray(starts[3]!, starts[3]! + 36 + size));
    dup[40]! ^= 1;
    bad[starts[8]! + 40]! ^= 1;
    const map = new BlockMap();
    const hashes = new DeferredBlockHashes();
    const read = (b: Uint8Array, at: number) => {
      if (map.add(b, at, at + 36 + size)) hashes.held(map);
      else hashes.add(b, at, at + 36 + size);
    };
    for (let i = 0; i < 10; i++) {
      read(bad, starts[i]!);
      if (i === 5) read(dup, 0);
    }
    expect(map.size).toBe(10);
    expect(hashes.unchecked).toBe(11);
    expect(() => hashes.checkNow()).toThrow(`block ${cidToString(dup, 0)}`);

    // Without the bad duplicate, block 8 is named; with neither, everything checks.
    const again = new DeferredBlockHashes();
    const map2 = new BlockMap();
    for (let i = 0; i < 10; i++) if (map2.add(bad, starts[i]!, starts[i]! + 36 + size)) again.held(map2);
    expect(() => again.checkNow()).toThrow(`block ${cidToString(bad, starts[8]!)}`);
    const good = new DeferredBlockHashes();
    const map3 = new BlockMap();
    for (let i = 0; i < 10; i++) if (map3.add(buf, starts[i]!, starts[i]! + 36 + size)) good.held(map3);
    good.checkNow();
    expect(good.unchecked).toBe(0);
  });
});
