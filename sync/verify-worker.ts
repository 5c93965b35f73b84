/**
 * A verify thread of `VerifyPool`: runs `checkCommitFrame` on the frames it is sent and answers,
 * per frame, the verified change without its blocks (the caller holds the same bytes and rebuilds
 * the views from their offsets) or the named error.
 */
import { parentPort } from 'node:worker_threads';
import { SignatureError } from '../atproto/errors.ts';
import { CommitVerifyError } from './errors.ts';
import { checkCommitFrame, type CommitFrame } from './verify-commit.ts';
import type { VerifyJob, VerifyReply, VerifyResult } from './verify-pool.ts';

async function verifyOne({ frame, key }: VerifyJob): Promise<VerifyResult> {
  try {
    const { car, keep, dataCid, ops, mstNodes } = await checkCommitFrame(frame as CommitFrame, key);
    const spans: [string, number, number][] = [];
    const copies: [string, Uint8Array][] = [];
    for (const i of keep) {
      const bytes = car.dataAt(i);
      if (bytes.buffer === frame.blocks.buffer) spans.push([car.cidStringAt(i), bytes.byteOffset - frame.blocks.byteOffset, bytes.length]);
      else copies.push([car.cidStringAt(i), bytes]);
    }
    return { ok: true, dataCid, ops, mstNodes, spans, copies };
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
