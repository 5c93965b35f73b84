/** The worker side of `signatures.ts`: verifies commit signatures with import's own function, a batch per message (`signature-frames.ts`). */
import { parentPort } from 'node:worker_threads';
import { verifyCommitSignature } from '../../../atproto/commit.ts';
import { type SignatureAnswer, readJobs } from './signature-frames.ts';

parentPort!.on('message', (frame: ArrayBuffer) => {
  const jobs = readJobs(frame);
  void Promise.all(
    jobs.map((job) =>
      // The fields a signature check does not read (data, rev, prev) are left empty.
      verifyCommitSignature({ ...job.commit, version: 3, data: '', rev: '', prev: null }, job.cid, job.key).then(
        () => null,
        (err: unknown) => ({ id: job.id, error: err instanceof Error ? err.message : String(err) }),
      ),
    ),
  ).then((results) => {
    const failed = results.filter((r) => r !== null);
    const ok = new Uint32Array(jobs.length - failed.length);
    let n = 0;
    for (const [i, r] of results.entries()) if (r === null) ok[n++] = jobs[i]!.id;
    const answer: SignatureAnswer = { ok, failed };
    parentPort!.postMessage(answer, [ok.buffer]);
  });
});
