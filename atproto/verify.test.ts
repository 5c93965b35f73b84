import { beforeAll, describe, expect, it } from 'vitest';
import * as CBOR from '@atcute/cbor';
import * as CID from '@atcute/cid';
import { verifyRepoCar } from '@atproto/repo';
import {
  BlockHashMismatchError,
  CarFormatError,
  CarTooLargeError,
  CommitError,
  InvalidRepoError,
  MissingBlockError,
  MstError,
  SignatureError,
  TooManyBlocksError,
} from './errors.ts';
import { type VerifiedRepo, type VerifyOptions, verifyRepo, verifyRepoStream } from './verify.ts';
import { readCar } from './car.ts';
import { readMst } from './mst.ts';
import { addBlocks, cidFor, dropBlock, flipByte, readCarBlocks, resignCommit, writeCar } from './testing/car-edit.ts';
import { type NodeSpec, canonicalTree, craftRepo, craftedRecordValue } from './testing/craft-mst.ts';
import { keysOfLayer } from './testing/keys.ts';
import { type MadeRepo, type TestKeypair, makeRepo, newKeypair } from './testing/make-repo.ts';

let good: MadeRepo;
let other: TestKeypair;
let layer0: string[];
let layer1: string[];
let layer2: string[];

beforeAll(async () => {
  good = await makeRepo({ records: 300 });
  other = await newKeypair();
  [layer0, layer1, layer2] = await Promise.all([keysOfLayer(0, 6), keysOfLayer(1, 3), keysOfLayer(2, 1)]);
});

const optionsFor = (repo: { did: string; signingKey: string }, extra: Partial<VerifyOptions> = {}): VerifyOptions => ({
  did: repo.did,
  signingKey: repo.signingKey,
  ...extra,
});

function* chunksOf(bytes: Uint8Array, size: number): Generator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

async function* asyncChunks(bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  yield* chunksOf(bytes, size);
}

function expectRecords(repo: VerifiedRepo, made: { records: { collection: string; rkey: string; cid: string; path: string }[] }): void {
  expect(repo.records.map((r) => ({ ...r }))).toEqual(made.records);
}

describe('verifyRepo on good repos', () => {
  it('verifies a secp256k1 repo and returns its records in MST order', async () => {
    const repo = await verifyRepo(good.car, optionsFor(good));
    expect(repo).toMatchObject({ did: good.did, version: 3, rev: good.rev, commitCid: good.commitCid, dataCid: good.dataCid, unreachableBlocks: 0 });
    expectRecords(repo, good);
    expect(repo.blocks.size).toBe(1 + repo.mstNodes.length + good.records.length);
    expect(repo.mstNodes[0]).toBe(good.dataCid);
    expect(repo.mstHeight).toBeGreaterThan(0);
    for (const record of good.records) expect(repo.blocks.get(record.cid)).toBeInstanceOf(Uint8Array);
  });

  it('verifies a P-256 repo, and takes the key as a bare multikey too', async () => {
    const p256 = await makeRepo({ records: 40, keyType: 'p256' });
    expectRecords(await verifyRepo(p256.car, optionsFor(p256)), p256);
    const multikey = p256.signingKey.slice('did:key:'.length);
    expectRecords(await verifyRepo(p256.car, { did: p256.did, signingKey: multikey }), p256);
  });

  it('verifies an empty repo', async () => {
    const empty = await makeRepo({ records: 0 });
    const repo = await verifyRepo(empty.car, optionsFor(empty));
    expect(repo.records).toEqual([]);
    expect(repo.mstHeight).toBe(0);
  });

  it('gives the same result from a stream of small chunks', async () => {
    const whole = await verifyRepo(good.car, optionsFor(good));
    const streamed = await verifyRepoStream(asyncChunks(good.car, 97), optionsFor(good));
    expect(streamed.records).toEqual(whole.records);
    expect(streamed.commitCid).toBe(whole.commitCid);
    expect(streamed.blocks.size).toBe(whole.blocks.size);
  });

  it('leaves out blocks the commit does not reach', async () => {
    const car = addBlocks(good.car, [CBOR.encode({ junk: 1 }), CBOR.encode({ junk: 2 })]);
    const repo = await verifyRepo(car, optionsFor(good));
    expect(repo.unreachableBlocks).toBe(2);
    expect(repo.blocks.size).toBe(1 + repo.mstNodes.length + good.records.length);
    expectRecords(repo, good);
  });

  it('keeps the records compactly, and its indexes right when blocks before them are left out', async () => {
    const { root, blocks } = readCarBlocks(good.car);
    const junk = [CBOR.encode({ junk: 1 }), CBOR.encode({ junk: 2 })].map((b): [string, Uint8Array] => [cidFor(b), b]);
    // Junk first: every reached block moves down two places when the junk is left out.
    const car = writeCar(root, [...junk, ...blocks]);
    const repo = await verifyRepo(car, optionsFor(good));
    expect(repo.unreachableBlocks).toBe(2);
    const list = repo.recordList!;
    expect(list.length).toBe(good.records.length);
    expect(list.collections()).toEqual([...new Set(good.records.map((r) => r.collection))]);
    for (let i = 0; i < list.length; i++) {
      const made = good.records[i]!;
      expect([list.pathAt(i), list.collectionAt(i), list.rkeyAt(i), list.cidAt(i)]).toEqual([made.path, made.collection, made.rkey, made.cid]);
      expect(Buffer.from(repo.blocks.dataAt(list.blockAt(i))).equals(blocks.get(made.cid)!)).toBe(true);
      expect(Buffer.from(list.cidBytesAt(i)).equals(CID.fromString(made.cid).bytes)).toBe(true);
    }
    expect([...list]).toEqual(good.records);
    expect(repo.mstNodeBlocks!.map((i) => repo.blocks.cidStringAt(i))).toEqual(repo.mstNodes);
    expect(repo.mstNodes[0]).toBe(good.dataCid);
  });

  it('refuses a tree whose keys written out pass the cap, naming the node and the key', async () => {
    const { blocks, root } = readCar(good.car);
    const commit = readCarBlocks(good.car);
    const data = (CBOR.decode(commit.blocks.get(root)!) as { data: CID.CidLink }).data.$link;
    const at = (cid: string) => blocks.indexOf(CID.fromString(cid).bytes);
    const keyBytes = good.records.reduce((n, r) => n + r.path.length, 0);
    // Exactly the keys fit; one byte less does not.
    expect(readMst(blocks, at(data), 32, new Uint8Array(blocks.size), keyBytes).records.length).toBe(good.records.length);
    const error = (() => {
      try {
        readMst(blocks, at(data), 32, new Uint8Array(blocks.size), keyBytes - 1);
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(MstError);
    expect(error).toMatchObject({ code: 'mst-path', key: good.records.at(-1)!.path });
  });

  it('accepts a hand-made canonical tree, whose data CID is the reference implementation\'s', async () => {
    const keys = [...layer0, ...layer1, ...layer2];
    const crafted = await craftRepo({ keypair: good.keypair, tree: await canonicalTree(keys) });
    const reference = await makeRepo({
      keypair: good.keypair,
      records: keys.map((key) => ({ collection: key.split('/')[0]!, rkey: key.split('/')[1]!, value: craftedRecordValue(key) })),
    });
    expect(crafted.dataCid).toBe(reference.dataCid);
    const repo = await verifyRepo(crafted.car, optionsFor(crafted));
    expect(repo.mstHeight).toBe(2);
    expect(repo.records.map((r) => r.path)).toEqual([...keys].sort());
  });
});

interface Fault {
  name: string;
  car: () => Promise<Uint8Array>;
  options?: () => Partial<VerifyOptions>;
  error: new (...args: never[]) => InvalidRepoError;
  code: string;
  /** Text the message must hold: the cause, named. */
  message: () => string | RegExp;
  /** Whether @atproto/repo's verifyRepoCar also refuses it (it does not check everything). */
  reference: 'rejects' | 'accepts';
}

const craft = (tree: NodeSpec, omit?: (cid: string) => boolean) => craftRepo({ keypair: good.keypair, tree, ...(omit ? { omit } : {}) });

/** An MST node of `good` below the root. */
function innerNode(): string {
  const { blocks } = readCarBlocks(good.car);
  for (const [cid, bytes] of blocks) {
    const value = CBOR.decode(bytes) as { e?: unknown };
    if (cid !== good.dataCid && value.e !== undefined) return cid;
  }
  throw new Error('no inner node');
}

const faults: Fault[] = [
  {
    name: 'a flipped byte in a record block',
    car: async () => flipByte(good.car, good.records[5]!.cid),
    error: BlockHashMismatchError,
    code: 'block-hash-mismatch',
    message: () => good.records[5]!.cid,
    reference: 'rejects',
  },
  {
    name: 'a flipped byte in an MST node',
    car: async () => flipByte(good.car, good.dataCid),
    error: BlockHashMismatchError,
    code: 'block-hash-mismatch',
    message: () => good.dataCid,
    reference: 'rejects',
  },
  {
    name: 'a flipped byte in the commit',
    car: async () => flipByte(good.car, good.commitCid, 10),
    error: BlockHashMismatchError,
    code: 'block-hash-mismatch',
    message: () => good.commitCid,
    reference: 'rejects',
  },
  {
    name: 'a commit signed by another key',
    car: () => resignCommit(good.car, other),
    error: SignatureError,
    code: 'signature-invalid',
    message: () => 'signature does not verify',
    reference: 'rejects',
  },
  {
    name: 'a signing key that is no key',
    car: async () => good.car,
    options: () => ({ signingKey: 'did:key:zNotAKeyAtAll' }),
    error: SignatureError,
    code: 'signing-key-invalid',
    message: () => 'did:key:zNotAKeyAtAll',
    reference: 'rejects',
  },
  {
    name: 'a commit naming another DID',
    car: () => resignCommit(good.car, good.keypair, (c) => void (c.did = 'did:plc:someoneelse00000000000')),
    error: CommitError,
    code: 'commit-did',
    message: () => 'names did:plc:someoneelse00000000000',
    reference: 'rejects',
  },
  {
    name: 'a version 2 commit',
    car: () => resignCommit(good.car, good.keypair, (c) => void (c.version = 2)),
    error: CommitError,
    code: 'commit-version',
    message: () => 'version is 2, expected 3',
    reference: 'rejects',
  },
  {
    name: 'a commit without rev',
    car: () => resignCommit(good.car, good.keypair, (c) => void delete c.rev),
    error: CommitError,
    code: 'commit-malformed',
    message: () => 'rev',
    reference: 'rejects',
  },
  {
    name: 'a commit whose data is not a CID link',
    car: () => resignCommit(good.car, good.keypair, (c) => void (c.data = 'bafy')),
    error: CommitError,
    code: 'commit-malformed',
    message: () => 'data is not a CID link',
    reference: 'rejects',
  },
  {
    name: 'a missing record block',
    car: async () => dropBlock(good.car, good.records[10]!.cid),
    error: MissingBlockError,
    code: 'missing-block',
    message: () => `missing record block ${good.records[10]!.cid} for ${good.records[10]!.path}`,
    reference: 'rejects',
  },
  {
    name: 'a missing MST node',
    car: async () => dropBlock(good.car, innerNode()),
    error: MissingBlockError,
    code: 'missing-block',
    message: () => `missing mst-node block ${innerNode()}`,
    reference: 'rejects',
  },
  {
    name: 'a missing commit block',
    car: async () => {
      const { blocks } = readCarBlocks(good.car);
      blocks.delete(good.commitCid);
      return writeCar(good.commitCid, blocks);
    },
    error: MissingBlockError,
    code: 'missing-block',
    message: () => `missing commit block ${good.commitCid}`,
    reference: 'rejects',
  },
  {
    name: 'keys out of order',
    car: async () => (await craft({ entries: [{ key: layer0[1]! }, { key: layer0[0]! }] })).car,
    error: MstError,
    code: 'mst-unsorted',
    message: () => `(key "${layer0[0]}")`,
    reference: 'accepts',
  },
  {
    name: 'a duplicate key',
    car: async () => (await craft({ entries: [{ key: layer0[0]! }, { key: layer0[0]! }] })).car,
    error: MstError,
    code: 'mst-unsorted',
    message: () => `(key "${layer0[0]}")`,
    reference: 'accepts',
  },
  {
    name: 'keys out of order across a subtree',
    car: async () =>
      (await craft({ left: { entries: [{ key: 'app.bsky.zzzz.post/3kzzzzzzzzzzz' }] }, entries: [{ key: layer1[0]! }] })).car,
    error: MstError,
    code: 'mst-unsorted',
    // The subtree's key is out of the range its parent gives it (the node is checked alone).
    message: () => `does not sort before ${JSON.stringify(layer1[0])}, the key after this subtree (key "app.bsky.zzzz.post/3kzzzzzzzzzzz")`,
    reference: 'accepts',
  },
  {
    name: 'a key on a higher layer than its node',
    car: async () => (await craft({ entries: [{ key: layer0[0]! }, { key: layer0[1]! }, { key: layer1[0]! }].sort(byKey) })).car,
    error: MstError,
    code: 'mst-layer',
    message: () => /key of layer [01] is in a node of layer [01]/,
    reference: 'accepts',
  },
  {
    name: 'a subtree that skips a layer',
    car: async () => (await craft({ left: { entries: [{ key: layer0[0]! }] }, entries: [{ key: layer2[0]! }] })).car,
    error: MstError,
    code: 'mst-layer',
    message: () => 'key of layer 0 is in a node of layer 1',
    reference: 'accepts',
  },
  {
    name: 'an invalid path (no collection NSID)',
    car: async () => (await craft({ entries: [{ key: 'notansid/3kabcdefghijk' }] })).car,
    error: MstError,
    code: 'mst-path',
    message: () => '(key "notansid/3kabcdefghijk")',
    reference: 'accepts',
  },
  {
    name: 'an invalid path (two slashes)',
    car: async () => (await craft({ entries: [{ key: 'app.bsky.feed.post/a/b' }] })).car,
    error: MstError,
    code: 'mst-path',
    message: () => 'not a valid collection/rkey path',
    reference: 'rejects',
  },
  {
    name: 'an invalid path (non-ASCII)',
    car: async () => (await craft({ entries: [{ key: 'app.bsky.feed.post/caf\u00e9' }] })).car,
    error: MstError,
    code: 'mst-path',
    message: () => 'not a valid collection/rkey path',
    reference: 'rejects',
  },
  {
    name: 'a tree above the height cap',
    car: async () => good.car,
    options: () => ({ caps: { maxMstHeight: 0 } }),
    error: MstError,
    code: 'mst-depth',
    message: () => /tree height \d+ is over the cap of 0/,
    reference: 'accepts',
  },
  {
    name: 'a prefix shorter than the shared prefix',
    car: async () => (await craft({ entries: [{ key: layer0[0]! }, { key: layer0[1]!, prefix: 3 }] })).car,
    error: MstError,
    code: 'mst-non-canonical',
    message: () => 'prefix length 3 is shorter than the shared prefix',
    reference: 'accepts',
  },
  {
    name: 'an empty node below the root',
    car: async () => (await craft({ entries: [{ key: layer1[0]!, right: { entries: [] } }] })).car,
    error: MstError,
    code: 'mst-non-canonical',
    message: () => 'empty node below the root',
    reference: 'accepts',
  },
  {
    name: 'a root with no entries over a subtree',
    car: async () => (await craft({ left: { entries: [{ key: layer0[0]! }] }, entries: [] })).car,
    error: MstError,
    code: 'mst-non-canonical',
    message: () => 'root node has no entries',
    reference: 'accepts',
  },
  {
    name: 'an MST node that is not a node',
    car: notANodeCar,
    error: MstError,
    code: 'mst-malformed',
    message: () => 'expected',
    reference: 'rejects',
  },
  {
    name: 'a CAR over the byte cap',
    car: async () => good.car,
    options: () => ({ caps: { maxBytes: 10_000 } }),
    error: CarTooLargeError,
    code: 'car-too-large',
    message: () => 'larger than the cap of 10000 bytes',
    reference: 'accepts',
  },
  {
    name: 'a CAR over the block cap',
    car: async () => good.car,
    options: () => ({ caps: { maxBlocks: 50 } }),
    error: TooManyBlocksError,
    code: 'car-too-many-blocks',
    message: () => 'more than the cap of 50 blocks',
    reference: 'accepts',
  },
  {
    name: 'a truncated CAR',
    car: async () => good.car.subarray(0, good.car.length - 7),
    error: CarFormatError,
    code: 'car-format',
    message: () => 'truncated',
    reference: 'rejects',
  },
  {
    name: 'bytes that are no CAR',
    car: async () => new TextEncoder().encode('<html>502 Bad Gateway</html>'),
    error: CarFormatError,
    code: 'car-format',
    message: () => 'CAR',
    reference: 'rejects',
  },
];
/** The good repo with its commit pointing at a block that is DAG-CBOR but no MST node. */
async function notANodeCar(): Promise<Uint8Array> {
  const { blocks, root } = readCarBlocks(good.car);
  const notANode = CBOR.encode({ e: 'nope', l: null });
  const nodeCid = cidFor(notANode);
  blocks.set(nodeCid, notANode);
  return resignCommit(writeCar(root, blocks), good.keypair, (c) => void (c.data = CID.toCidLink(CID.fromString(nodeCid))));
}

function byKey(a: { key: string }, b: { key: string }): number {
  return a.key < b.key ? -1 : 1;
}

describe('verifyRepo refuses', () => {
  for (const fault of faults) {
    it(`${fault.name}, with ${fault.error.name} (${fault.code})`, async () => {
      const car = await fault.car();
      const options = optionsFor(good, fault.options?.());
      const error = await verifyRepo(car, options).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(fault.error);
      expect(error).toBeInstanceOf(InvalidRepoError);
      expect((error as InvalidRepoError).code).toBe(fault.code);
      const message = fault.message();
      if (typeof message === 'string') expect((error as Error).message).toContain(message);
      else expect((error as Error).message).toMatch(message);
    });
  }
});

/** What verifying ends in: the error (thrown by verify, or by `blocksChecked` when deferred), or the records. */
async function outcomeOf(car: Uint8Array, options: VerifyOptions): Promise<Error | string[]> {
  try {
    const repo = await verifyRepo(car, options);
    expect(repo.blocksChecked !== undefined).toBe(options.deferBlockHashes === true);
    await repo.blocksChecked;
    return repo.records.map((r) => `${r.path}=${r.cid}`);
  } catch (e) {
    return e as Error;
  }
}

function expectSameOutcome(deferred: Error | string[], eager: Error | string[]): void {
  if (Array.isArray(eager)) return expect(deferred).toEqual(eager);
  expect(deferred).toBeInstanceOf(eager.constructor);
  expect((deferred as Error).message).toBe(eager.message);
}

describe('verifyRepo with deferBlockHashes', () => {
  it('verifies a good repo as eagerly, and its blocks check out later', async () => {
    const options = optionsFor(good, { deferBlockHashes: true });
    const repo = await verifyRepo(good.car, options);
    await expect(repo.blocksChecked).resolves.toBeUndefined();
    expectRecords(repo, good);
    expectSameOutcome(await outcomeOf(good.car, options), await outcomeOf(good.car, optionsFor(good)));
  });

  it('refuses, through blocksChecked, a bad record block that nothing else reads', async () => {
    const cid = good.records[7]!.cid;
    const car = flipByte(good.car, cid);
    const repo = await verifyRepo(car, optionsFor(good, { deferBlockHashes: true }));
    await expect(repo.blocksChecked).rejects.toThrow(BlockHashMismatchError);
    await expect(repo.blocksChecked).rejects.toThrow(`block ${cid}`);
    await expect(verifyRepo(car, optionsFor(good))).rejects.toThrow(`block ${cid}`);
  });

  for (const fault of faults) {
    it(`refuses ${fault.name} as an eager verify does`, async () => {
      const car = await fault.car();
      const options = optionsFor(good, fault.options?.());
      const eager = await outcomeOf(car, options);
      expect(eager).toBeInstanceOf(fault.error);
      expectSameOutcome(await outcomeOf(car, { ...options, deferBlockHashes: true }), eager);
    });
  }

  it('refuses a bad block ahead of a fault found after it, from verify itself', async () => {
    const record = good.records[3]!.cid;
    const bad = flipByte(good.car, record);
    const combined: [string, () => Promise<Uint8Array>][] = [
      ['a commit signed by another key', () => resignCommit(bad, other)],
      ['a commit of another DID', () => resignCommit(bad, good.keypair, (c) => void (c.did = 'did:plc:someoneelse00000000000'))],
      ['a missing MST node', async () => dropBlock(bad, good.dataCid)],
      ['a truncated CAR', async () => bad.subarray(0, bad.length - 2)],
    ];
    for (const [name, make] of combined) {
      const car = await make();
      const eager = await outcomeOf(car, optionsFor(good));
      expect(eager, name).toBeInstanceOf(BlockHashMismatchError);
      expect((eager as BlockHashMismatchError).cid, name).toBe(record);
      // Thrown by verify itself, not left to blocksChecked: the structure it read was not to be trusted.
      const thrown = await verifyRepo(car, optionsFor(good, { deferBlockHashes: true })).then(() => undefined, (e: Error) => e);
      expect(thrown, name).toBeDefined();
      expectSameOutcome(thrown!, eager);
    }
  });

  it('gives a stream the same outcome', async () => {
    const bad = flipByte(good.car, good.records[3]!.cid);
    for (const car of [good.car, bad, await resignCommit(bad, other)]) {
      const eager = await outcomeOf(car, optionsFor(good));
      const streamed = await verifyRepoStream(asyncChunks(car, 997), optionsFor(good, { deferBlockHashes: true }))
        .then(async (repo) => (await repo.blocksChecked, repo.records.map((r) => `${r.path}=${r.cid}`)))
        .catch((e: Error) => e);
      expectSameOutcome(streamed, eager);
    }
  });
});

describe('@atproto/repo verifyRepoCar agrees', () => {
  it('on a good repo: the same records', async () => {
    const reference = await verifyRepoCar(good.car, good.did, good.signingKey);
    const ours = await verifyRepo(good.car, optionsFor(good));
    expect(reference.creates.map((c) => ({ collection: c.collection, rkey: c.rkey, cid: c.cid.toString() }))).toEqual(
      ours.records.map(({ collection, rkey, cid }) => ({ collection, rkey, cid })),
    );
    expect(reference.commit.cid.toString()).toBe(ours.commitCid);
    expect(reference.commit.rev).toBe(ours.rev);
  });

  // Where the reference only loads what it needs (tree shape, layers, caps), it accepts what we
  // refuse; everything it refuses, we refuse too.
  for (const fault of faults) {
    it(`on ${fault.name}: it ${fault.reference === 'rejects' ? 'refuses it too' : 'accepts it (we are stricter)'}`, async () => {
      const car = await fault.car();
      const options = optionsFor(good, fault.options?.());
      const signingKey = typeof options.signingKey === 'string' ? options.signingKey : options.signingKey.didKey;
      const outcome = await verifyRepoCar(car, options.did, signingKey).then(
        () => 'accepts',
        () => 'rejects',
      );
      expect(outcome).toBe(fault.reference);
    });
  }
});
