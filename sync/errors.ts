/**
 * What can be wrong with a firehose frame or a commit, as named errors the consumer turns into
 * outcomes (error-as-data): it counts them, keeps them with their sequence number, and goes on.
 */
export type FrameProblem =
  | 'frame-too-large'
  | 'frame-malformed'
  | 'frame-unknown-type'
  | 'error-frame';

export class FrameError extends Error {
  readonly problem: FrameProblem;
  readonly seq: number | undefined;
  constructor(problem: FrameProblem, message: string, seq?: number, options?: ErrorOptions) {
    super(message, options);
    this.name = 'FrameError';
    this.problem = problem;
    this.seq = seq;
  }
}

export type CommitProblem =
  /** The commit block, its CAR or its fields are wrong. */
  | 'commit-malformed'
  /** The signature does not verify with the DID's key, even after resolving the DID again. */
  | 'bad-signature'
  /** Inverting the ops on the new tree does not give prevData (or an op's block is missing). */
  | 'bad-proof';

export class CommitVerifyError extends Error {
  readonly problem: CommitProblem;
  constructor(problem: CommitProblem, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'CommitVerifyError';
    this.problem = problem;
  }
}
