import { beforeAll, describe, expect, it } from 'vitest';
import * as CBOR from '@atcute/cbor';
import { generatedFirehose, readFirehose } from '../bench/sync-firehose.ts';
import { decodeAnyFrame, decodeFrame, MAX_FRAME_BYTES, readCommitFrame } from './frames.ts';
import { FrameError } from './errors.ts';
import { mutateBytes, seededRandom } from '../test/mutate.ts';

const frame = (header: unknown, body: unknown) => Buffer.concat([CBOR.encode(header), CBOR.encode(body)]);
const CID = { $link: 'bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm' };

function problemOf(bytes: Uint8Array): { problem: string; seq: number | undefined } {
  try {
    decodeFrame(bytes);
  } catch (err) {
    if (err instanceof FrameError) return { problem: err.problem, seq: err.seq };
    throw err;
  }
  throw new Error('decoded');
}

describe('decodeFrame', () => {
  it('reads a commit with its ops, since and prevData', () => {
    const f = decodeFrame(frame({ op: 1, t: '#commit' }, {
      seq: 7, repo: 'did:plc:x', rev: '3l', since: null, commit: CID, blocks: CBOR.toBytes(new Uint8Array([1])), prevData: CID, time: 't', tooBig: false,
      ops: [{ action: 'create', path: 'a.b/c', cid: CID }, { action: 'delete', path: 'a.b/d', cid: null, prev: CID }],
    }));
    expect(f).toMatchObject({ t: '#commit', seq: 7, since: null, prevData: CID.$link, ops: [{ action: 'create', cid: CID.$link, prev: null }, { action: 'delete', cid: null, prev: CID.$link }] });
  });

  it('reads account, identity, info and error frames', () => {
    expect(decodeFrame(frame({ op: 1, t: '#account' }, { seq: 1, did: 'did:plc:x', time: 't', active: false, status: 'takendown' }))).toMatchObject({ active: false, status: 'takendown' });
    expect(decodeFrame(frame({ op: 1, t: '#identity' }, { seq: 2, did: 'did:plc:x', time: 't', handle: 'a.test' }))).toMatchObject({ handle: 'a.test' });
    expect(decodeFrame(frame({ op: 1, t: '#info' }, { name: 'OutdatedCursor' }))).toEqual({ t: '#info', name: 'OutdatedCursor', message: undefined });
    expect(decodeFrame(frame({ op: -1 }, { error: 'FutureCursor', message: 'no' }))).toEqual({ t: 'error', error: 'FutureCursor', message: 'no' });
  });

  it('names what is wrong, with the seq when it could be read', () => {
    expect(problemOf(new Uint8Array([0xa2, 0x61, 0x74, 0xff]))).toEqual({ problem: 'frame-malformed', seq: undefined });
    expect(problemOf(frame({ op: 1, t: '#labels' }, { seq: 9 }))).toEqual({ problem: 'frame-unknown-type', seq: 9 });
    expect(problemOf(frame({ op: 1, t: '#commit' }, { seq: 3, repo: 5 }))).toEqual({ problem: 'frame-malformed', seq: 3 });
    expect(problemOf(frame({ op: 1, t: '#account' }, { seq: 4, did: 'd', time: 't', active: 'yes' }))).toEqual({ problem: 'frame-malformed', seq: 4 });
    expect(problemOf(frame({ op: 1, t: '#commit' }, { seq: 5, ops: new Array(201).fill({}) }))).toEqual({ problem: 'frame-malformed', seq: 5 });
    expect(problemOf(new Uint8Array(MAX_FRAME_BYTES + 1))).toEqual({ problem: 'frame-too-large', seq: undefined });
  });

  it('survives deep nesting without overflowing the stack', () => {
    // Written by hand: the encoder itself recurses. A map { did, seq, time, handle } whose handle
    // is an array nested 100,000 deep.
    const text = (s: string) => [0x60 + s.length, ...Buffer.from(s)];
    const body = Buffer.from([0xa4, ...text('did'), ...text('d'), ...text('seq'), 0x01, ...text('time'), ...text('t'), ...text('handle'), ...new Array(100_000).fill(0x81), 0x01]);
    const bytes = Buffer.concat([CBOR.encode({ op: 1, t: '#identity' }), body]);
    expect(problemOf(bytes)).toEqual({ problem: 'frame-malformed', seq: 1 });
  });
});

describe('a commit frame read straight from its bytes', () => {
  // readCommitFrame may only say yes where the general decoder says yes, with the same frame;
  // anything else it leaves to the general decoder (undefined).
  let hose: Uint8Array[];
  beforeAll(async () => {
    hose = readFirehose((await generatedFirehose(20, 5, () => {})).file);
  }, 120_000);
  const LINK = CBOR.decode(CBOR.encode(CID)) as unknown;
  const made = () => [
    // every field of the lexicon, each optional one in each of its forms
    frame({ op: 1, t: '#commit' }, {
      seq: 2 ** 40, repo: 'did:plc:x', rev: '3l', since: '3k', commit: LINK, blocks: CBOR.toBytes(new Uint8Array(300)), prevData: LINK, time: 't', tooBig: true, rebase: false,
      blobs: [LINK, LINK], ops: [{ action: 'update', path: 'a.b/c', cid: LINK, prev: LINK }, { action: 'delete', path: 'a.b/d', cid: null, prev: LINK }, { action: 'create', path: 'a.b/e', cid: LINK }],
    }),
    frame({ op: 1, t: '#commit' }, { seq: 0, repo: 'did:plc:y', rev: '3m', since: null, commit: LINK, blocks: CBOR.toBytes(new Uint8Array(0)), prevData: null, time: '', ops: [] }),
    frame({ op: 1, t: '#commit' }, { seq: 30, repo: 'did:plc:' + 'z'.repeat(300), rev: '3n', commit: LINK, blocks: CBOR.toBytes(new Uint8Array(70_000)), time: 't', ops: new Array(30).fill({ action: 'create', path: 'a.b/c', cid: LINK }) }),
  ];
  const plain = (f: unknown) => JSON.parse(JSON.stringify(f, (_, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v === undefined ? '(undefined)' : v)));
  const agree = (bytes: Uint8Array): 'fast' | 'general' | 'refused' => {
    const fast = readCommitFrame(bytes);
    let general: unknown;
    try {
      general = decodeAnyFrame(bytes);
    } catch (err) {
      expect(fast, `the fast path took a frame the general decoder refuses (${(err as Error).message}): ${Buffer.from(bytes).toString('hex').slice(0, 400)}…`).toBeUndefined();
      return 'refused';
    }
    if (fast === undefined) return 'general';
    expect(plain(fast)).toEqual(plain(general));
    return 'fast';
  };

  it('takes the frames the bench firehose and every lexicon field make, as the general decoder reads them', () => {
    for (const bytes of [...hose, ...made()]) expect(agree(bytes)).toBe('fast');
    // the CIDs' bytes are views into the frame
    const f = decodeFrame(hose[hose.length - 1]!) as Extract<ReturnType<typeof decodeFrame>, { t: '#commit' }>;
    expect(f.commitBytes!.buffer).toBe(hose[hose.length - 1]!.buffer);
  });

  it('leaves other frames, fields and forms to the general decoder', () => {
    const [full] = made();
    const body = CBOR.decode(full!.subarray(15)) as Record<string, unknown>;
    expect(agree(frame({ op: 1, t: '#commit' }, { ...body, extra: 1 }))).toBe('general');
    expect(agree(frame({ op: 1, t: '#commit' }, { ...body, repo: 'did:plc:é' }))).toBe('general');
    expect(agree(frame({ op: 1, t: '#commit' }, { ...body, tooBig: 1 }))).toBe('general');
    expect(agree(frame({ op: 1, t: '#commit' }, { ...body, seq: -1 }))).toBe('general');
    expect(agree(frame({ op: 1, t: '#commit' }, { ...body, repo: 5 }))).toBe('refused');
    expect(agree(frame({ op: 1, t: '#commit' }, { ...body, ops: [{ action: 'move', path: 'a/b' }] }))).toBe('refused');
    expect(agree(frame({ op: 1, t: '#identity' }, { seq: 2, did: 'did:plc:x', time: 't' }))).toBe('general');
  });

  it('never takes a mutation of a commit frame that the general decoder refuses or reads otherwise', () => {
    const rand = seededRandom(0x1f2e3d4c);
    const seen = { fast: 0, general: 0, refused: 0 };
    const bases = [...hose.slice(-20), ...made().slice(0, 2)];
    for (let i = 0; i < 12_000; i++) {
      // Most edits where the structure is (the frame's first bytes and its ops), some anywhere.
      const bytes = mutateBytes(bases[rand(bases.length)]!, rand, (length) => (rand(4) === 0 ? rand(length) : rand(Math.min(length, 400))));
      seen[agree(bytes)]++;
    }
    // Some of each: mutations the fast path takes, ones the general decoder refuses, and ones
    // it reads that the fast path leaves to it.
    expect(seen.fast).toBeGreaterThan(1000);
    expect(seen.refused).toBeGreaterThan(1000);
    expect(seen.general).toBeGreaterThan(50);
  });
});
