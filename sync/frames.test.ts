import { describe, expect, it } from 'vitest';
import * as CBOR from '@atcute/cbor';
import { decodeFrame, MAX_FRAME_BYTES } from './frames.ts';
import { FrameError } from './errors.ts';

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
