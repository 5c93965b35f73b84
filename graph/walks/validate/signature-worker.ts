/** The worker side of `signatures.ts`: verifies commit signatures with import's own function, a batch per message. */
import { parentPort } from 'node:worker_threads';
import { type Commit, verifyCommitSignature } from '../../../atproto/commit.ts';

export interface SignatureJob {
  id: number;
  commit: Commit;
  cid: string;
  key: string;
}

export interface SignatureResult {
  id: number;
  error: string | null;
}

parentPort!.on('message', (jobs: SignatureJob[]) => {
  void Promise.all(
    jobs.map((job) =>
      verifyCommitSignature(job.commit, job.cid, job.key).then(
        (): SignatureResult => ({ id: job.id, error: null }),
        (err: unknown): SignatureResult => ({ id: job.id, error: err instanceof Error ? err.message : String(err) }),
      ),
    ),
  ).then((results) => parentPort!.postMessage(results));
});
