/**
 * Hostile commits: every one must come out as an InvalidRepoError naming the commit, never as
 * a TypeError, SyntaxError or RangeError (item 1), and no re-encoding of a signed commit may
 * verify under a second CID (item 5). Each case is spliced by hand into an otherwise good
 * repo, so the only thing wrong is the commit block.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as CBOR from '@atcute/cbor';
import * as CID from '@atcute/cid';
import { CommitError, InvalidRepoError, MstError } from './errors.ts';
import { MAX_COMMIT_DEPTH, readAnyCommit, readCommit, readStandardCommit } from './commit.ts';
import { readCar } from './car.ts';
import { verifyRepo } from './verify.ts';
import { cidFor, readCarBlocks, writeCar } from './testing/car-edit.ts';
import { type MadeRepo, makeRepo } from './testing/make-repo.ts';
import { mutateBytes, seededRandom } from '../test/mutate.ts';

let good: MadeRepo;
beforeAll(async () => {
  good = await makeRepo({ records: 40 });
});

const PLACEHOLDER = Uint8Array.of(0x61, 0x78, 0x00); // key "x", value 0: the shortest key sorts first

/**
 * The good repo with an extra commit field `x` whose encoded value is `raw`, signed over
 * `signedX` (the value the signer saw; default 0). Returns the CAR with the new commit as root.
 */
async function withExtraField(raw: Uint8Array, signedX: unknown = 0, codec: 0x71 | 0x55 = 0x71): Promise<Uint8Array> {
  const { root, blocks } = readCarBlocks(good.car);
  const { sig: _, ...unsigned } = CBOR.decode(blocks.get(root)!) as Record<string, unknown>;
  const sig = await good.keypair.sign(CBOR.encode({ ...unsigned, x: signedX }));
  const template = CBOR.encode({ ...unsigned, x: 0, sig: CBOR.toBytes(sig) });
  expect([...template.subarray(1, 4)]).toEqual([...PLACEHOLDER]);
  const commit = Buffer.concat([template.subarray(0, 3), raw, template.subarray(4)]);
  return replaceCommit(blocks, root, commit, codec);
}

function replaceCommit(blocks: Map<string, Uint8Array>, root: string, commit: Uint8Array, codec: 0x71 | 0x55 = 0x71): Uint8Array {
  blocks.delete(root);
  const cid = cidFor(commit, codec);
  return writeCar(cid, [[cid, commit], ...blocks]);
}

/** The good commit's bytes with `from` (found once, after the map head) replaced by `to`; signature untouched. */
function patchedCommit(from: number[], to: number[]): Uint8Array {
  const { root, blocks } = readCarBlocks(good.car);
  const bytes = Buffer.from(blocks.get(root)!);
  const at = bytes.indexOf(Buffer.from(from));
  expect(at, 'pattern in the commit').toBeGreaterThan(0);
  const commit = Buffer.concat([bytes.subarray(0, at), Buffer.from(to), bytes.subarray(at + from.length)]);
  return replaceCommit(blocks, root, commit);
}

const text = (s: string) => {
  const b = Buffer.from(s);
  if (b.length >= 24) throw new Error('short strings only');
  return Buffer.concat([Uint8Array.of(0x60 | b.length), b]);
};
const map1 = (key: string, value: Uint8Array) => Buffer.concat([Uint8Array.of(0xa1), text(key), value]);
const nestedArrays = (depth: number) => Buffer.concat([Buffer.alloc(depth, 0x81), Uint8Array.of(0x00)]);
const nestedMaps = (depth: number) => {
  const parts: Uint8Array[] = [];
  for (let i = 0; i < depth; i++) parts.push(Uint8Array.of(0xa1, 0x61, 0x61));
  return Buffer.concat([...parts, Uint8Array.of(0x00)]);
};
const goodCid = 'bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm';

async function refusal(car: Uint8Array): Promise<unknown> {
  try {
    await verifyRepo(car, { did: good.did, signingKey: good.signingKey });
  } catch (err) {
    return err;
  }
  throw new Error('the repo verified');
}

describe('item 1: a commit any PDS can send never throws an untyped error', () => {
  // Each of these threw TypeError, SyntaxError or RangeError out of verifyRepo before.
  const cases: Array<[string, () => Uint8Array]> = [
    ['a {"$link"} map whose string is not a CID', () => map1('$link', text('not-a-cid'))],
    ['a {"$link"} map holding a number', () => map1('$link', Uint8Array.of(0x05))],
    ['a {"$bytes"} map whose string is not base64', () => map1('$bytes', text('%%%'))],
    ['a {"$bytes"} map beside a link-shaped one', () => Buffer.concat([Uint8Array.of(0x82), map1('$bytes', text('@@')), map1('$link', text('b'))])],
    ['arrays nested 10,000 deep', () => nestedArrays(10_000)],
    ['maps nested 10,000 deep', () => nestedMaps(10_000)],
    ['arrays nested 100,000 deep', () => nestedArrays(100_000)],
    [`arrays nested one past the bound (${MAX_COMMIT_DEPTH})`, () => nestedArrays(MAX_COMMIT_DEPTH)],
  ];
  for (const [name, raw] of cases) {
    it(`refuses ${name} as a CommitError`, async () => {
      const err = await refusal(await withExtraField(raw()));
      expect(err).toBeInstanceOf(CommitError);
      expect((err as CommitError).code).toMatch(/^commit-(malformed|non-canonical)$/);
      expect((err as Error).message.length).toBeLessThanOrEqual(1000);
    });
  }

  it('accepts an extra field nested within the bound, signed as it is', async () => {
    const raw = nestedArrays(MAX_COMMIT_DEPTH - 2);
    const repo = await verifyRepo(await withExtraField(raw, CBOR.decode(raw)), { did: good.did, signingKey: good.signingKey });
    expect(repo.rev).toBe(good.rev);
  });
});

describe('item 5: one signed commit has one encoding and one CID', () => {
  // Each is the good commit, re-encoded by hand; its signature is the original one, which
  // verifies over the canonical form. Before, every one of these verified under a new CID.
  const version = [0x67, ...Buffer.from('version')];
  const cases: Array<[string, () => Promise<Uint8Array> | Uint8Array]> = [
    ['version 3 as a float64 (3.0)', () => patchedCommit([...version, 0x03], [...version, 0xfb, 0x40, 0x08, 0, 0, 0, 0, 0, 0])],
    ['an extra integer field as -0.0', () => withExtraField(Uint8Array.of(0xfb, 0x80, 0, 0, 0, 0, 0, 0, 0), 0)],
    ['an extra integer field as 0.0', () => withExtraField(Uint8Array.of(0xfb, 0, 0, 0, 0, 0, 0, 0, 0), 0)],
    ['a link stored as a {"$link": …} map', () => withExtraField(map1('$link', Buffer.concat([Uint8Array.of(0x78, goodCid.length), Buffer.from(goodCid)])), CID.toCidLink(CID.fromString(goodCid)))],
    ['bytes stored as a {"$bytes": …} map', () => withExtraField(map1('$bytes', text('AQID')), CBOR.toBytes(Uint8Array.of(1, 2, 3)))],
    ['the version key with a non-minimal length', () => patchedCommit(version, [0x78, 0x07, ...Buffer.from('version')])],
    ['version with a non-minimal integer', () => patchedCommit([...version, 0x03], [...version, 0x18, 0x03])],
    ['the commit under a raw CID', () => withExtraField(Uint8Array.of(0x00), 0, 0x55)],
  ];
  for (const [name, car] of cases) {
    it(`refuses ${name}`, async () => {
      const err = await refusal(await car());
      expect(err).toBeInstanceOf(CommitError);
      expect((err as CommitError).code).toMatch(/^commit-(non-canonical|malformed)$/);
    });
  }

  it('refuses non-canonical key order in the commit map', async () => {
    const { root, blocks } = readCarBlocks(good.car);
    const { sig, ...unsigned } = CBOR.decode(blocks.get(root)!) as Record<string, unknown>;
    // Encoded field by field in plain (not length-first) order: "data" < "did" < "prev" < "rev" < "sig" < "version".
    const fields = Object.entries({ ...unsigned, sig }).sort(([a], [b]) => (a < b ? -1 : 1));
    const body = fields.map(([k, v]) => Buffer.concat([text(k), CBOR.encode(v)]));
    const commit = Buffer.concat([Uint8Array.of(0xa0 | fields.length), ...body]);
    expect(commit.equals(Buffer.from(blocks.get(root)!))).toBe(false);
    const err = await refusal(replaceCommit(blocks, root, commit));
    expect(err).toBeInstanceOf(CommitError);
  });

  it('refuses non-canonical MST nodes: a non-minimal length and keys out of order', async () => {
    const { root, blocks } = readCarBlocks(good.car);
    const data = (CBOR.decode(blocks.get(root)!) as { data: CID.CidLink }).data.$link;
    const node = Buffer.from(blocks.get(data)!);
    // "e" array head: minimal form 0x80|n or 0x98 n; rewrite it with a two-byte length.
    const count = (CBOR.decode(node) as { e: unknown[] }).e.length;
    const head = count < 24 ? Uint8Array.of(0x80 | count) : Uint8Array.of(0x98, count);
    const wide = Uint8Array.of(0x99, 0, count);
    const variants = [
      Buffer.concat([node.subarray(0, 3), wide, node.subarray(3 + head.length)]),
      // { l, e } instead of { e, l }
      (() => {
        const { e, l } = CBOR.decode(node) as { e: unknown; l: unknown };
        return Buffer.concat([Uint8Array.of(0xa2), text('l'), CBOR.encode(l), text('e'), CBOR.encode(e)]);
      })(),
    ];
    for (const bad of variants) {
      const { root: r, blocks: b } = readCarBlocks(good.car);
      const { sig: _, ...unsigned } = CBOR.decode(b.get(r)!) as Record<string, unknown>;
      b.delete(data);
      const newData = cidFor(bad);
      b.set(newData, bad);
      const commit = { ...unsigned, data: CID.toCidLink(CID.fromString(newData)) };
      const signed = CBOR.encode({ ...commit, sig: CBOR.toBytes(await good.keypair.sign(CBOR.encode(commit))) });
      const err = await refusal(replaceCommit(b, r, signed));
      expect(err).toBeInstanceOf(InvalidRepoError);
      expect(err).toBeInstanceOf(MstError);
    }
  });

  it('still verifies the canonical commit', async () => {
    const repo = await verifyRepo(good.car, { did: good.did, signingKey: good.signingKey });
    expect(repo.commitCid).toBe(good.commitCid);
  });
});

describe('the bytes a commit signs', () => {
  // readCommit takes them from the block (less its sig entry); they must be what encoding the
  // commit without sig gives, whatever other fields it has and wherever they sort.
  const extras: Record<string, unknown>[] = [
    {},
    { a: 1, zz: 'after data', longerThanVersion: [1, [2, { x: null }]] },
    { sif: true, sih: false, s: -1, big: 2 ** 40, neg: -(2 ** 33), half: 1.5, text: 'x'.repeat(300) },
    { bytes: CBOR.toBytes(new Uint8Array(70)), link: undefined },
    Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`f${i}`, i * 1000])),
  ];
  for (const [i, extra] of extras.entries()) {
    it(`matches the encoder for commit ${i}`, () => {
      const { root, blocks } = readCarBlocks(good.car);
      const { sig, ...unsigned } = CBOR.decode(blocks.get(root)!) as Record<string, unknown>;
      const fields = { ...unsigned, ...Object.fromEntries(Object.entries(extra).filter(([, v]) => v !== undefined)) };
      if ('link' in extra) fields.link = unsigned.data;
      const commit = CBOR.encode({ ...fields, sig });
      const cid = cidFor(commit);
      const read = readCommit(readCar(writeCar(cid, [[cid, commit]])).blocks, cid, good.did);
      expect(Buffer.from(read.unsigned).equals(Buffer.from(CBOR.encode(fields)))).toBe(true);
      expect(Buffer.from(read.unsigned).includes(Buffer.from('sig'))).toBe(Object.keys(fields).some((k) => k.startsWith('sig')));
    });
  }
});

describe('the standard commit read straight from its bytes', () => {
  // readStandardCommit may only say yes where the general decoder says yes, with the same
  // commit; anything else it leaves to the general decoder (undefined).
  const did = () => good.did;
  const standard = (): Uint8Array[] => {
    const { root, blocks } = readCarBlocks(good.car);
    const bytes = blocks.get(root)!;
    const fields = CBOR.decode(bytes) as Record<string, unknown>;
    const { prev: _, ...noPrev } = fields;
    return [bytes, CBOR.encode({ ...fields, prev: fields.data }), CBOR.encode(noPrev), CBOR.encode({ ...fields, sig: CBOR.toBytes(new Uint8Array(10)) })];
  };
  const agree = (bytes: Uint8Array, who = did()): 'fast' | 'general' | 'refused' => {
    const fast = readStandardCommit(bytes, who);
    let general: unknown;
    try {
      general = readAnyCommit(bytes, 'bafy-test', who);
    } catch (err) {
      expect(fast, `the fast path took bytes the general decoder refuses (${(err as Error).message}): ${Buffer.from(bytes).toString('hex').slice(0, 400)}…`).toBeUndefined();
      return 'refused';
    }
    if (fast === undefined) return 'general';
    const plain = (c: unknown) => JSON.parse(JSON.stringify(c, (_, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v)));
    expect(plain(fast)).toEqual(plain(general));
    return 'fast';
  };

  it('takes the commits a PDS writes (prev null, a link or absent; any sig length) as the general decoder reads them', () => {
    for (const bytes of standard()) expect(agree(bytes)).toBe('fast');
  });

  it('leaves another DID, extra fields and other encodings to the general decoder', () => {
    const [bytes] = standard();
    expect(agree(bytes!, 'did:plc:someoneelse')).toBe('refused');
    const fields = CBOR.decode(bytes!) as Record<string, unknown>;
    expect(agree(CBOR.encode({ ...fields, extra: 1 }))).toBe('general');
    expect(agree(CBOR.encode({ ...fields, rev: 'not a tid' }))).toBe('refused');
    expect(agree(CBOR.encode({ ...fields, version: 2 }))).toBe('refused');
  });

  it('never takes a mutation of a standard commit that the general decoder refuses or reads otherwise', () => {
    // Seeded, so that a failure can be replayed.
    const rand = seededRandom(0x2545f491);
    const seen = { fast: 0, general: 0, refused: 0 };
    const bases = standard();
    for (let i = 0; i < 20_000; i++) {
      const bytes = mutateBytes(bases[rand(bases.length)]!, rand);
      seen[agree(bytes)]++;
    }
    // Mutations that keep the commit readable (a changed signature or digest byte) are taken.
    expect(seen.fast).toBeGreaterThan(1000);
    expect(seen.refused).toBeGreaterThan(1000);
  });
});
