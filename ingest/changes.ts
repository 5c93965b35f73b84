/**
 * What the store path takes and what it answers: changes to repos, from a verified full repo
 * (backfill) or a verified commit (live sync), plus the identity and account changes the
 * firehose carries; and one outcome per change.
 */
import type { VerifiedRepo } from '../atproto/verify.ts';

/** A full verified repo: stored as the diff against the record index. */
export interface SnapshotChange {
  kind: 'snapshot';
  repo: VerifiedRepo;
  pds: string;
  handle: string | undefined;
  signingKey: string;
}

export interface CommitOp {
  action: 'create' | 'update' | 'delete';
  collection: string;
  rkey: string;
  /** The record's CID after the op (create, update). */
  cid: string | null;
  /** Its CID before (update, delete): what the stored record index must hold. */
  prev: string | null;
}

/**
 * A verified commit (signature and MST proof checked by the caller): stored as its ops, on top
 * of the stored state, which must be exactly the one the commit was made on.
 */
export interface CommitChange {
  kind: 'commit';
  did: string;
  rev: string;
  /** The rev the commit was made on; must equal the stored rev. */
  since: string | null;
  commitCid: string;
  /** The new MST root. */
  dataCid: string;
  /** The previous MST root (sync v1.1): must equal the stored data root. */
  prevData: string | undefined;
  ops: CommitOp[];
  /** The commit, its new MST nodes and new record blocks: base32 CID → bytes. */
  blocks: Map<string, Uint8Array>;
  /** Which of `blocks` are MST nodes of the new tree (stored with the commit). */
  mstNodes: string[];
  /**
   * The identity the signature was checked with, recorded when the repo row lacks it, or over
   * the row's when `replaces` (resolved afresh because the key on record failed: a rotation).
   */
  identity?: { pds: string | undefined; handle: string | undefined; signingKey: string; replaces?: boolean } | undefined;
}

/** An account's hosting status changed (firehose `#account`). */
export interface AccountChange {
  kind: 'account';
  did: string;
  active: boolean;
  /** Why inactive: deactivated, takendown, suspended, deleted, or another upstream word. */
  status: string | undefined;
}

/** An account's identity changed (firehose `#identity`): the caller resolved it again. */
export interface IdentityChange {
  kind: 'identity';
  did: string;
  handle: string | undefined;
  pds: string | undefined;
  signingKey: string | undefined;
}

export type RepoChange = SnapshotChange | CommitChange | AccountChange | IdentityChange;

export interface StoreCounts {
  created: number;
  updated: number;
  deleted: number;
  unchanged: number;
}

/**
 * One change's outcome. A `gap` is a commit that does not follow the stored state (its `since`
 * is not the stored rev, its prev data root or an op's prev CID disagrees, or the repo is not
 * mirrored yet): nothing of it is stored and the repo wants a resync.
 */
export type ChangeOutcome =
  | ({ kind: 'imported'; did: string; rev: string } & StoreCounts)
  | { kind: 'skipped'; did: string; rev: string; storedRev: string }
  | { kind: 'dropped'; did: string; rev: string | undefined; reason: string }
  | { kind: 'gap'; did: string; rev: string; storedRev: string | null; reason: string }
  | { kind: 'account'; did: string; status: string; changed: boolean; needsBackfill: boolean }
  | { kind: 'identity'; did: string };

/**
 * Which records are stored (backfill's filter mode, built by `recordFilter` in
 * backfill/import.ts): a plain interface here, so the store path depends on no caller.
 */
export interface RecordFilter {
  /** Whether records of this collection are stored. */
  keeps(collection: string): boolean;
  /** Whether a repo with records in these collections is mirrored at all. */
  keepsRepo(collections: Iterable<string>): boolean;
  /** Whether repos without a record in a signal collection are dropped. */
  dropsRepos: boolean;
}

export interface BatchOptions {
  filter: RecordFilter;
  /** Ephemeral mode: keep events (for this long), not the record index. */
  ephemeralRetentionSeconds?: number | undefined;
  /** Where the changes came from, as the event log records it. */
  origin: 'backfill' | 'live';
  /**
   * A repo this batch marks gone (a firehose `#account`) is due for the gone re-check after this
   * long; without it, it waits for no re-check.
   */
  goneRecheckSeconds?: number | undefined;
  /**
   * A cursor (job_state row) committed in the same transaction as the changes it covers; its
   * value given, or made from the batch's outcomes (called once per attempt, before COMMIT).
   */
  cursor?: { key: string; value: unknown } | { key: string; valueAfter: (outcomes: ChangeOutcome[]) => unknown } | undefined;
  /** More writes that belong in the batch's transaction (a consumer's error records). */
  alsoInTransaction?: ((tx: import('pg').ClientBase) => Promise<void>) | undefined;
  /** Called after each step with its name, for benchmarks. */
  trace?: (step: string) => void;
  /**
   * Rows (records and events) past which the batch writes them while it checks the block index
   * and lays out the pack, with the check on a second connection when the pool has one to spare
   * at once. Default 20,000 (a large repo's first import); tests set 0.
   */
  overlapRows?: number | undefined;
}

export interface BatchResult {
  outcomes: ChangeOutcome[];
  /** Per change: the blocks the batch's pack holds because of it (first needed by it). */
  perChange: { newBlocks: number; blockBytes: number }[];
  /** The batch's pack, when it added blocks. */
  packKey: string | undefined;
  newBlocks: number;
  packBytes: number;
}
