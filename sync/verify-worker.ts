/**
 * A verify thread of `VerifyPool`: runs `checkCommitFrame` on the frames it is sent and answers,
 * per frame, the checked commit without its blocks (the caller holds the same bytes and rebuilds
 * the CID strings and views from their offsets) or the named error; both ways flat (`VerifyJobs`,
 * `VerifyReply`).
 */
import { parentPort } from 'node:worker_threads';
import { CID_LENGTH, cidToString, isRepoCid } from '../atproto/cid.ts';
import { SignatureError } from '../atproto/errors.ts';
import { CommitVerifyError } from './errors.ts';
import type { FrameOp } from './frames.ts';
import { checkCommitFrameCids, NOT_A_REPO_CID, type CommitFrame } from './verify-commit.ts';
import { ACTIONS, FRAME_INTS, HAS_CID, HAS_PREV, type VerifyJobs, type VerifyReply } from './verify-pool.ts';

parentPort!.on('message', async ({ id, bytes, ints, strings }: VerifyJobs) => {
  const errors: VerifyReply['errors'] = [];
  const out: number[] = [];
  let n = 0;
  let s = 0;
  while (n < ints.length) {
    const start = ints[n]!;
    const length = ints[n + 1]!;
    const hasPrevData = ints[n + 2] === 1;
    const opCount = ints[n + 3]!;
    n += FRAME_INTS;
    const blocks = bytes.subarray(start, start + length);
    let at = start + length;
    const cid = (): Uint8Array => {
      const c = bytes.subarray(at, (at += CID_LENGTH));
      return isRepoCid(c, 0) ? c : NOT_A_REPO_CID;
    };
    const commit = cid();
    const prevData = hasPrevData ? cid() : null;
    const repo = strings[s++]!;
    const rev = strings[s++]!;
    const key = strings[s++]!;
    const ops: FrameOp[] = new Array(opCount);
    const opCids: (Uint8Array | null)[] = new Array(2 * opCount);
    for (let i = 0; i < opCount; i++) {
      const code = ints[n++]!;
      const c = code & HAS_CID ? cid() : null;
      const p = code & HAS_PREV ? cid() : null;
      opCids[2 * i] = c;
      opCids[2 * i + 1] = p;
      // The CIDs' strings serve the check's messages only.
      ops[i] = { action: ACTIONS[code & 3]!, path: strings[s++]!, cid: named(c), prev: named(p) };
    }
    const frame = { t: '#commit', seq: 0, repo, rev, since: null, commit: named(commit)!, blocks, ops, prevData: named(prevData) ?? undefined, tooBig: false, time: '' } satisfies CommitFrame;
    try {
      const { car, keep, dataBytes, mstNodeCount } = await checkCommitFrameCids(frame, { commit, prevData, ops: opCids }, key);
      // Every block and the data root are views into the frame's bytes (the CAR reader copies none of one buffer).
      if (dataBytes.buffer !== bytes.buffer) throw new Error('the data root is not a view into its frame');
      out.push(dataBytes.byteOffset - blocks.byteOffset, keep.length, mstNodeCount);
      for (const b of keep) {
        if (car.bufferAt(b).buffer !== bytes.buffer) throw new Error('a checked block is not a view into its frame');
        const offset = car.bufferAt(b).byteOffset - blocks.byteOffset;
        out.push(car.startAt(b) + offset, car.endAt(b) + offset);
      }
      errors.push(null);
    } catch (err) {
      const e = err as Error;
      if (err instanceof SignatureError) errors.push({ type: 'signature', code: err.code, message: e.message });
      else if (err instanceof CommitVerifyError) errors.push({ type: 'verify', code: err.problem, message: e.message });
      else errors.push({ type: 'other', code: e.name ?? 'Error', message: e.message ?? String(err) });
    }
  }
  const reply = Int32Array.from(out);
  parentPort!.postMessage({ id, errors, ints: reply } satisfies VerifyReply, [reply.buffer]);
});

/** A CID's string for a message. */
function named(cid: Uint8Array | null): string | null {
  if (cid === null) return null;
  return cid.length === CID_LENGTH ? cidToString(cid, 0) : '(not a repo CID)';
}
