/**
 * A verify thread of `VerifyPool`: runs `checkCommitFrame` on the frames it is sent and answers,
 * per frame, the checked commit without its blocks (the caller holds the same bytes and rebuilds
 * the views from their offsets) or the named error; both ways flat (`VerifyJobs`, `VerifyReply`).
 */
import { parentPort } from 'node:worker_threads';
import { SignatureError } from '../atproto/errors.ts';
import { CommitVerifyError } from './errors.ts';
import type { FrameOp } from './frames.ts';
import { checkCommitFrame, type CommitFrame } from './verify-commit.ts';
import { FRAME_FIELDS, OP_FIELDS, type VerifyJobs, type VerifyReply } from './verify-pool.ts';

parentPort!.on('message', async ({ id, blocks, spans, meta }: VerifyJobs) => {
  const reply: VerifyReply = { id, errors: [], cids: [], nums: [] };
  let m = 0;
  for (let i = 0; i < spans.length; i += 2) {
    const frameBlocks = blocks.subarray(spans[i]!, spans[i]! + spans[i + 1]!);
    const [repo, rev, commit, prevData, key, opCount] = meta.slice(m, m + FRAME_FIELDS) as [string, string, string, string | null, string, string];
    m += FRAME_FIELDS;
    const ops: FrameOp[] = [];
    for (let k = 0; k < Number(opCount); k++, m += OP_FIELDS) {
      ops.push({ action: meta[m] as FrameOp['action'], path: meta[m + 1]!, cid: meta[m + 2]!, prev: meta[m + 3]! });
    }
    const frame = { t: '#commit', seq: 0, repo, rev, since: null, commit, blocks: frameBlocks, ops, prevData: prevData ?? undefined, tooBig: false, time: '' } satisfies CommitFrame;
    try {
      const { car, keep, dataCid, mstNodeCount } = await checkCommitFrame(frame, key);
      const cids = [dataCid];
      const nums = [keep.length, mstNodeCount];
      for (const b of keep) {
        const bytes = car.dataAt(b);
        // Every block is a view into the frame's bytes (the CAR reader copies none of one buffer).
        if (bytes.buffer !== frameBlocks.buffer) throw new Error('a checked block is not a view into its frame');
        cids.push(car.cidStringAt(b));
        nums.push(bytes.byteOffset - frameBlocks.byteOffset, bytes.length);
      }
      reply.cids.push(...cids);
      reply.nums.push(...nums);
      reply.errors.push(null);
    } catch (err) {
      const e = err as Error;
      if (err instanceof SignatureError) reply.errors.push({ type: 'signature', code: err.code, message: e.message });
      else if (err instanceof CommitVerifyError) reply.errors.push({ type: 'verify', code: err.problem, message: e.message });
      else reply.errors.push({ type: 'other', code: e.name ?? 'Error', message: e.message ?? String(err) });
    }
  }
  parentPort!.postMessage(reply);
});
