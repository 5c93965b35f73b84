/** The worker side of `signatures.ts`: verifies commit signatures with import's own function. */
import { parentPort } from 'node:worker_threads';
import { type Commit, verifyCommitSignature } from '../../../atproto/commit.ts';

export interface SignatureJob {
  id: number;
  commit: Commit;
  cid: string;
  key: string;
}

parentPort!.on('message', (job: SignatureJob) => {
  verifyCommitSignature(job.commit, job.cid, job.key).then(
    () => parentPort!.postMessage({ id: job.id, error: null }),
    (err: unknown) => parentPort!.postMessage({ id: job.id, error: err instanceof Error ? err.message : String(err) }),
  );
});
