/**
 * A verify thread of `VerifyPool`: runs `verifyCommitFrame` on the frames it is sent and answers,
 * per frame, the verified change without its blocks (the caller holds the same bytes and rebuilds
 * the views from their offsets) or the named error.
 */
import { parentPort } from 'node:worker_threads';
import { SignatureError } from '../atproto/errors.ts';
import { CommitVerifyError } from './errors.ts';
import { verifyCommitFrame, type CommitFrame } from './verify-commit.ts';
import type { VerifyJob, VerifyReply, VerifyResult } from './verify-pool.ts';

async function verifyOne({ frame, key }: VerifyJob): Promise<VerifyResult> {
  try {
    const change = await verifyCommitFrame(frame as CommitFrame, key);
    const spans: [string, number, number][] = [];
    const copies: [string, Uint8Array][] = [];
    for (const [cid, bytes] of change.blocks) {
      if (bytes.buffer === frame.blocks.buffer) spans.push([cid, bytes.byteOffset - frame.blocks.byteOffset, bytes.length]);
      else copies.push([cid, bytes]);
    }
    return { ok: true, dataCid: change.dataCid, ops: change.ops, mstNodes: change.mstNodes, spans, copies };
  } catch (err) {
    const e = err as Error;
    if (err instanceof SignatureError) return { ok: false, error: { type: 'signature', code: err.code, message: e.message } };
    if (err instanceof CommitVerifyError) return { ok: false, error: { type: 'verify', code: err.problem, message: e.message } };
    return { ok: false, error: { type: 'other', code: e.name ?? 'Error', message: e.message ?? String(err) } };
  }
}

parentPort!.on('message', async (msg: { id: number; jobs: VerifyJob[] }) => {
  const results: VerifyResult[] = [];
  for (const job of msg.jobs) results.push(await verifyOne(job));
  parentPort!.postMessage({ id: msg.id, results } satisfies VerifyReply);
});
