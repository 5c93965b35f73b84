import { beforeAll, describe, expect, it } from 'vitest';
import * as CBOR from '@atcute/cbor';
import * as CID from '@atcute/cid';
import { CarParser, readCar, readCarStream } from './car.ts';
import { BlockHashMismatchError, CarFormatError, CarTooLargeError, TooManyBlocksError } from './errors.ts';
import { cidFor, flipByte, readCarBlocks, writeCar } from './testing/car-edit.ts';
import { type MadeRepo, makeRepo } from './testing/make-repo.ts';

let repo: MadeRepo;
let reference: ReturnType<typeof readCarBlocks>;

beforeAll(async () => {
  repo = await makeRepo({ records: 200 });
  reference = readCarBlocks(repo.car);
});

/** Chunks of the given sizes, cycling, counting what the reader pulled. */
function source(bytes: Uint8Array, sizes: number[]) {
  const pulled = { chunks: 0, bytes: 0 };
  async function* chunks() {
    let i = 0;
    for (let pos = 0; pos < bytes.length; i++) {
      const size = sizes[i % sizes.length]!;
      const chunk = bytes.subarray(pos, pos + size);
      pos += size;
      pulled.chunks++;
      pulled.bytes += chunk.length;
      yield chunk;
    }
  }
  return { chunks: chunks(), pulled };
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: Error) => e,
  );
}

describe('readCar', () => {
  it('reads every block, keyed by CID string, as zero-copy views into the input', () => {
    const car = readCar(repo.car);
    expect(car.root).toBe(repo.commitCid);
    expect(car.bytes).toBe(repo.car.length);
    expect(car.blocks.size).toBe(reference.blocks.size);
    for (const [cid, bytes] of reference.blocks) {
      const got = car.blocks.get(cid)!;
      expect(Buffer.from(got).equals(bytes)).toBe(true);
      expect(got.buffer).toBe(repo.car.buffer);
    }
    expect([...car.blocks.keys()]).toEqual([...reference.blocks.keys()]);
  });

  it('names the block whose bytes do not match its CID', () => {
    const cid = repo.records[3]!.cid;
    expect(() => readCar(flipByte(repo.car, cid))).toThrow(BlockHashMismatchError);
    expect(() => readCar(flipByte(repo.car, cid))).toThrow(`block ${cid}: bytes do not hash to the CID`);
  });

  it('keeps one copy of a block that appears twice', () => {
    const [cid, bytes] = [...reference.blocks][1]!;
    const car = writeCar(reference.root, [...reference.blocks, [cid, bytes]]);
    expect(readCar(car).blocks.size).toBe(reference.blocks.size);
  });

  it('refuses CIDs other than CIDv1 sha-256 dag-cbor/raw', () => {
    const bytes = CBOR.encode({ a: 1 });
    const cid = CID.fromString(cidFor(bytes)).bytes.slice();
    cid[1] = 0x70; // dag-pb
    const header = CBOR.encode({ version: 1, roots: [CID.toCidLink(CID.fromString(cidFor(bytes)))] });
    const car = Buffer.concat([Uint8Array.of(header.length), header, Uint8Array.of(cid.length + bytes.length), cid, bytes]);
    expect(() => readCar(car)).toThrow(CarFormatError);
    expect(() => readCar(car)).toThrow(/unsupported CID \(prefix 01701220\)/);
  });

  it('refuses a missing or wrong header, and a truncated CAR', () => {
    expect(() => readCar(new Uint8Array())).toThrow('CAR is empty');
    const v2 = CBOR.encode({ version: 2, roots: [] });
    expect(() => readCar(Buffer.concat([Uint8Array.of(v2.length), v2]))).toThrow('not a CARv1 header');
    const noRoots = CBOR.encode({ version: 1, roots: [] });
    expect(() => readCar(Buffer.concat([Uint8Array.of(noRoots.length), noRoots]))).toThrow('names no root CID');
    expect(() => readCar(Uint8Array.of(0x05, 0xff, 0xff))).toThrow(CarFormatError);
    expect(() => readCar(repo.car.subarray(0, repo.car.length - 1))).toThrow(/truncated: \d+ bytes of an incomplete entry/);
    expect(() => readCar(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01))).toThrow('varint is too long');
  });

  it('reads the standard header from its bytes as the decoder reads it, and leaves every variant of it to the decoder', () => {
    const root = CID.fromString(repo.commitCid);
    const withHeader = (header: Uint8Array) => Buffer.concat([Uint8Array.of(header.length), header]);
    const standard = CBOR.encode({ version: 1, roots: [CID.toCidLink(root)] });
    expect(standard.length).toBe(58);
    const read = readCar(withHeader(standard));
    expect(read.root).toBe(repo.commitCid);
    expect(Buffer.from(read.rootBytes!).equals(Buffer.from(root.bytes))).toBe(true);
    // Each byte of the standard header changed: what the decoder makes of it, the reader makes too.
    for (let i = 0; i < standard.length; i++) {
      for (const value of [standard[i]! ^ 0x01, standard[i]! ^ 0x20, 0x00]) {
        if (value === standard[i]) continue;
        const bad = standard.slice();
        bad[i] = value;
        let decoded: { version?: unknown; roots?: unknown } | undefined;
        try {
          decoded = CBOR.decode(bad) as typeof decoded;
        } catch {
          decoded = undefined;
        }
        const roots = decoded?.roots;
        const accepted = decoded?.version === 1 && Array.isArray(roots) && roots[0] instanceof CID.CidLinkWrapper;
        if (accepted) expect(readCar(withHeader(bad)).root).toBe((roots[0] as CID.CidLinkWrapper).$link);
        else expect(() => readCar(withHeader(bad)), `byte ${i} = ${value}`).toThrow(CarFormatError);
      }
    }
    // Two roots, an extra field: not the standard header, read by the decoder.
    const two = CBOR.encode({ version: 1, roots: [CID.toCidLink(root), CID.toCidLink(root)] });
    expect(readCar(withHeader(two)).root).toBe(repo.commitCid);
    const extra = CBOR.encode({ version: 1, roots: [CID.toCidLink(root)], x: 1 });
    expect(readCar(withHeader(extra)).root).toBe(repo.commitCid);
  });

  it('stops at the byte and block caps', () => {
    expect(() => readCar(repo.car, { maxBytes: repo.car.length - 1 })).toThrow(CarTooLargeError);
    expect(readCar(repo.car, { maxBytes: repo.car.length }).blocks.size).toBe(reference.blocks.size);
    expect(() => readCar(repo.car, { maxBlocks: reference.blocks.size - 1 })).toThrow(TooManyBlocksError);
    expect(readCar(repo.car, { maxBlocks: reference.blocks.size }).blocks.size).toBe(reference.blocks.size);
  });
});

/** What reading `car` ends in: its error, or how many blocks it read (checking deferred hashes, now or in slices). */
function eagerly(car: Uint8Array, caps = {}): Error | number {
  try {
    return readCar(car, caps).blocks.size;
  } catch (e) {
    return e as Error;
  }
}

async function deferred(car: Uint8Array, caps = {}, how: 'now' | 'background' = 'now'): Promise<Error | number> {
  try {
    const contents = readCar(car, caps, { deferHashes: true });
    expect(contents.unchecked).toBeDefined();
    if (how === 'now') contents.unchecked!.checkNow();
    else await contents.unchecked!.inBackground();
    expect(contents.unchecked!.unchecked).toBe(0);
    return contents.blocks.size;
  } catch (e) {
    return e as Error;
  }
}

describe('readCar with deferred hashes', () => {
  const sameOutcome = (a: Error | number, b: Error | number) => {
    if (typeof a === 'number') return expect(b).toBe(a);
    expect(b).toBeInstanceOf(a.constructor);
    expect((b as Error).message).toBe(a.message);
  };

  it('reads what an eager read reads, and checks every block later, now or in slices', async () => {
    expect(await deferred(repo.car)).toBe(reference.blocks.size);
    expect(await deferred(repo.car, {}, 'background')).toBe(reference.blocks.size);
  });

  it('leaves a bad block to the check, which names the first one in CAR order', async () => {
    const [first, second] = [...reference.blocks.keys()].slice(5, 7);
    const bad = flipByte(flipByte(repo.car, second!), first!);
    const contents = readCar(bad, {}, { deferHashes: true });
    expect(contents.blocks.size).toBe(reference.blocks.size);
    for (const how of ['now', 'background'] as const) {
      const error = await deferred(bad, {}, how);
      expect(error).toBeInstanceOf(BlockHashMismatchError);
      expect((error as BlockHashMismatchError).cid).toBe(first);
      sameOutcome(eagerly(bad), error);
    }
    // Asked again, the check answers the same.
    expect(() => contents.unchecked!.checkNow()).toThrow(BlockHashMismatchError);
    await expect(contents.unchecked!.inBackground()).rejects.toThrow(`block ${first}`);
  });

  it('refuses a bad block ahead of a later fault (truncation, the block cap, a bad CID), as an eager read does', async () => {
    const cids = [...reference.blocks.keys()];
    const bad = flipByte(repo.car, cids[2]!);
    const badCid = readCarBlocks(bad);
    const cases: [string, Uint8Array, object][] = [
      ['truncated', bad.subarray(0, bad.length - 3), {}],
      ['past the block cap', bad, { maxBlocks: 4 }],
    ];
    // A block with an unsupported CID after the bad one.
    const bytes = CBOR.encode({ a: 1 });
    const cid = CID.fromString(cidFor(bytes)).bytes.slice();
    cid[1] = 0x70;
    cases.push(['a bad CID', Buffer.concat([bad, Uint8Array.of(cid.length + bytes.length), cid, bytes]), {}]);
    for (const [name, car, caps] of cases) {
      const eager = eagerly(car, caps);
      expect(eager, name).toBeInstanceOf(BlockHashMismatchError);
      sameOutcome(eager, await deferred(car, caps));
    }
    expect(badCid.root).toBe(reference.root);
    // And the later fault alone is still refused as it is eagerly.
    for (const caps of [{ maxBytes: repo.car.length - 1 }, { maxBlocks: 4 }]) sameOutcome(eagerly(repo.car, caps), await deferred(repo.car, caps));
    sameOutcome(eagerly(repo.car.subarray(0, repo.car.length - 3)), await deferred(repo.car.subarray(0, repo.car.length - 3)));
  });

  it('checks a block that appears twice in both of its copies', async () => {
    const [cid, bytes] = [...reference.blocks][1]!;
    const changed = Uint8Array.from(bytes);
    changed[3]! ^= 1;
    const car = writeCar(reference.root, [...reference.blocks, [cid, changed]]);
    expect(eagerly(car)).toBeInstanceOf(BlockHashMismatchError);
    sameOutcome(eagerly(car), await deferred(car));
  });

  it('gives a stream the same outcomes, whatever the chunk boundaries', async () => {
    const bad = flipByte(repo.car, [...reference.blocks.keys()][3]!);
    for (const car of [repo.car, bad, bad.subarray(0, bad.length - 3)]) {
      const eager = eagerly(car);
      for (const sizes of [[1000], [7, 300]]) {
        const outcome = await readCarStream(source(car, sizes).chunks, {}, { deferHashes: true })
          .then((c) => (c.unchecked!.checkNow(), c.blocks.size))
          .catch((e: Error) => e);
        sameOutcome(eager, outcome);
      }
    }
    // The byte cap passed in a later chunk than the bad block: the bad block is what is refused.
    const capped = async (deferHashes: boolean) =>
      readCarStream(source(bad, [500]).chunks, { maxBytes: bad.length - 1 }, { deferHashes }).then((c) => c.blocks.size, (e: Error) => e);
    const eager = await capped(false);
    expect(eager).toBeInstanceOf(BlockHashMismatchError);
    sameOutcome(eager, await capped(true));
  });
});

describe('readCarStream', () => {
  it('gives what readCar gives, whatever the chunk boundaries', async () => {
    const whole = readCar(repo.car);
    for (const sizes of [[1], [7, 0, 3], [36], [37, 1000], [65_536], [repo.car.length]]) {
      const { chunks } = source(repo.car, sizes);
      const streamed = await readCarStream(chunks);
      expect(streamed.root).toBe(whole.root);
      expect(streamed.bytes).toBe(repo.car.length);
      expect([...streamed.blocks].map(([c, b]) => [c, Buffer.from(b).toString('hex')])).toEqual(
        [...whole.blocks].map(([c, b]) => [c, Buffer.from(b).toString('hex')]),
      );
    }
  });

  it('stops pulling as soon as the byte cap is passed', async () => {
    const { chunks, pulled } = source(repo.car, [1000]);
    const error = await rejection(readCarStream(chunks, { maxBytes: 5000 }));
    expect(error).toBeInstanceOf(CarTooLargeError);
    expect((error as CarTooLargeError).seen).toBe(6000);
    expect(pulled.bytes).toBe(6000); // the chunk that passed the cap, and not one more
  });

  it('stops at once when an entry declares more bytes than the cap allows', async () => {
    const header = CBOR.encode({ version: 1, roots: [CID.toCidLink(CID.fromString(repo.commitCid))] });
    // An entry claiming 2^40 bytes: the reader need not wait for them to refuse it.
    const car = Buffer.concat([Uint8Array.of(header.length), header, Uint8Array.of(0x80, 0x80, 0x80, 0x80, 0x80, 0x20), new Uint8Array(10_000)]);
    const { chunks, pulled } = source(car, [100]);
    expect(await rejection(readCarStream(chunks, { maxBytes: 1_000_000 }))).toBeInstanceOf(CarTooLargeError);
    expect(pulled.chunks).toBe(1);
    // The same with the length's varint split across two chunks.
    const split = source(car, [header.length + 3, 100]);
    expect(await rejection(readCarStream(split.chunks, { maxBytes: 1_000_000 }))).toBeInstanceOf(CarTooLargeError);
    expect(split.pulled.chunks).toBe(2);
  });

  it('stops pulling at the first bad block', async () => {
    const bad = flipByte(repo.car, [...reference.blocks.keys()][0]!);
    const { chunks, pulled } = source(bad, [512]);
    expect(await rejection(readCarStream(chunks))).toBeInstanceOf(BlockHashMismatchError);
    expect(pulled.bytes).toBeLessThan(bad.length / 2);
  });

  it('refuses a stream that ends inside an entry', async () => {
    const { chunks } = source(repo.car.subarray(0, repo.car.length - 5), [300]);
    expect(await rejection(readCarStream(chunks))).toBeInstanceOf(CarFormatError);
  });

  it('assembles an entry split into 1-byte chunks with work linear in its bytes', () => {
    // One 1 MB raw block between two ordinary ones: a server dripping it one byte per chunk
    // made the old parser rescan everything pending on each chunk (quadratic in the entry).
    const big = new Uint8Array(1024 * 1024).map((_, i) => (i * 31) & 0xff);
    const bigCid = cidFor(big, 0x55);
    const [first, second] = [...reference.blocks].slice(0, 2);
    const car = writeCar(reference.root, [first!, [bigCid, big], second!]);
    const parser = new CarParser();
    for (let i = 0; i < car.length; i++) parser.push(car.subarray(i, i + 1));
    const read = parser.end();
    expect(read.blocks.size).toBe(3);
    expect(Buffer.from(read.blocks.get(bigCid)!).equals(big)).toBe(true);
    // Each byte is copied once into the entry's buffer, plus at most once more per doubling of
    // that buffer: under 3× the CAR whatever the chunking; quadratic work would be ~10^12.
    expect(parser.bytesCopied).toBeGreaterThanOrEqual(car.length - 1);
    expect(parser.bytesCopied).toBeLessThan(3 * car.length);
    // Whole chunks copy nothing: every entry lies inside the one buffer.
    const whole = new CarParser();
    whole.push(car);
    whole.end();
    expect(whole.bytesCopied).toBe(0);
  });

  it('does not allocate the length an entry declares before its bytes arrive', () => {
    const header = CBOR.encode({ version: 1, roots: [CID.toCidLink(CID.fromString(repo.commitCid))] });
    // 400 MB declared (under the default cap), 10 bytes sent: the buffer stays small.
    const parser = new CarParser();
    const before = process.memoryUsage().arrayBuffers;
    parser.push(Buffer.concat([Uint8Array.of(header.length), header, Uint8Array.of(0x80, 0x80, 0x80, 0xc8, 0x01)]));
    parser.push(new Uint8Array(10));
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(10 * 1024 * 1024);
    expect(() => parser.end()).toThrow(/truncated: 15 bytes of an incomplete entry/);
  });
});
