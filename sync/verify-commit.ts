/**
 * Verifies a firehose `#commit` against the DID's key and, where it carries `prevData` (sync
 * v1.1), against its own proof: inverting its ops on the new tree (built from the frame's
 * blocks) must give the previous data root (`atproto/mst-invert.ts`). The store then checks that
 * root against the stored one, so that applying the ops to the stored tree is known to give the
 * new tree without loading it.
 */
import { readCar, type BlockMap } from '../atproto/car.ts';
import { CID_LENGTH, cidFromString, cidToString, equalCid, isRepoCid } from '../atproto/cid.ts';
import { readCommit } from '../atproto/commit.ts';
import { verifyCommitSignature } from '../atproto/signature.ts';
import { InvalidRepoError, SignatureError } from '../atproto/errors.ts';
import { invertOps, MstProofError, type ProofOp } from '../atproto/mst-invert.ts';
import { decodeMstNode, MstNodeFormatError, ENTRY_FIELDS, RIGHT } from '../atproto/mst-node.ts';
import type { CommitChange, CommitOp } from '../ingest/changes.ts';
import { CommitVerifyError } from './errors.ts';
import type { Frame } from './frames.ts';

export type CommitFrame = Extract<Frame, { t: '#commit' }>;

/** Highest MST layer walked in a frame's blocks; as in verifyRepo, far above any honest tree. */
const MAX_MST_HEIGHT = 32;

/** A checked commit, its blocks still as the CAR reader holds them. */
export interface CheckedCommit {
  dataCid: string;
  /** The same as its 36 bytes (a view into the commit block). */
  dataBytes: Uint8Array;
  car: BlockMap;
  /** Indexes into `car` of the blocks the store needs: the commit, the ops' records, then the new tree's nodes in the frame. */
  keep: number[];
  /** How many of `keep`, at its end, are the new tree's nodes. */
  mstNodeCount: number;
}

/**
 * The commit as a change for the store, or a named refusal.
 *
 * @throws SignatureError the signature does not verify with `signingKey` (the caller resolves
 *   the DID again once, then gives up with `bad-signature`)
 * @throws CommitVerifyError `commit-malformed` or `bad-proof`
 */
export async function verifyCommitFrame(frame: CommitFrame, signingKey: string): Promise<CommitChange> {
  const checked = await checkCommitFrame(frame, signingKey);
  const blocks = new Map<string, Uint8Array>();
  const mstNodes: string[] = [];
  checked.keep.forEach((i, k) => {
    const cid = checked.car.cidStringAt(i);
    blocks.set(cid, checked.car.dataAt(i));
    if (k >= checked.keep.length - checked.mstNodeCount) mstNodes.push(cid);
  });
  return {
    kind: 'commit',
    did: frame.repo,
    rev: frame.rev,
    since: frame.since,
    commitCid: frame.commit,
    dataCid: checked.dataCid,
    prevData: frame.prevData,
    ops: commitOps(frame),
    blocks,
    mstNodes,
  };
}

/**
 * A commit frame's CIDs as the check reads them: 36 bytes each, null where the frame names none,
 * and `NOT_A_REPO_CID` (empty) for a string that is not a CID a repo can have (only a frame made
 * by hand has one: the decoder refuses such frames).
 */
export interface FrameCids {
  commit: Uint8Array;
  prevData: Uint8Array | null;
  /** Per op: its cid, then its prev. */
  ops: (Uint8Array | null)[];
}
export const NOT_A_REPO_CID = new Uint8Array(0);

/** `verifyCommitFrame`'s checks; the blocks are left in the CAR reader's map. */
export function checkCommitFrame(frame: CommitFrame, signingKey: string): Promise<CheckedCommit> {
  return checkCommitFrameCids(frame, frameCids(frame), signingKey);
}

/**
 * The CIDs of `frame`: the decoder's views of them where they are still the frame's strings (a
 * frame copied and changed by hand may carry stale ones), else the strings decoded.
 */
export function frameCids(frame: CommitFrame): FrameCids {
  const ops: (Uint8Array | null)[] = new Array(2 * frame.ops.length);
  frame.ops.forEach((op, i) => {
    ops[2 * i] = cidOf(op.cid, op.cidBytes);
    ops[2 * i + 1] = cidOf(op.prev, op.prevBytes);
  });
  return { commit: cidOf(frame.commit, frame.commitBytes)!, prevData: cidOf(frame.prevData ?? null, frame.prevDataBytes), ops };
}

function cidOf(cid: string | null, bytes: Uint8Array | null | undefined): Uint8Array | null {
  if (cid === null) return null;
  if (bytes?.length === CID_LENGTH && isRepoCid(bytes, 0) && cidToString(bytes, 0) === cid) return bytes;
  return cidFromString(cid) ?? NOT_A_REPO_CID;
}

/**
 * `checkCommitFrame` with the frame's CIDs given as bytes (`frameCids`; the verify threads are
 * sent them so): the strings of `frame` serve only its messages.
 */
export async function checkCommitFrameCids(frame: CommitFrame, cids: FrameCids, signingKey: string): Promise<CheckedCommit> {
  let car;
  let commit;
  const commitCid = cids.commit.length === CID_LENGTH ? cids.commit : undefined;
  try {
    car = readCar(frame.blocks, { maxBytes: frame.blocks.length, maxBlocks: 10_000 });
    // Without its bytes (not a repo CID), the commit is looked up by its string, and missed.
    commit = commitCid === undefined ? readCommit(car.blocks, frame.commit, frame.repo) : readCommit(car.blocks, frame.commit, frame.repo, commitCid);
  } catch (err) {
    if (err instanceof InvalidRepoError) throw new CommitVerifyError('commit-malformed', `commit ${frame.rev} of ${frame.repo}: ${err.message}`, { cause: err });
    throw err;
  }
  if (commit.rev !== frame.rev) throw new CommitVerifyError('commit-malformed', `the commit's rev ${commit.rev} is not the frame's ${frame.rev}`);
  await verifyCommitSignature(commit, frame.commit, signingKey); // SignatureError for the caller

  const blocks = car.blocks;
  const keep: number[] = [blocks.indexOf(commitCid!)];
  const proofOps: ProofOp[] = new Array(frame.ops.length);
  checkPaths(frame);
  for (let i = 0; i < frame.ops.length; i++) {
    const op = frame.ops[i]!;
    const cid = cids.ops[2 * i]!;
    const record = cid === null || cid.length !== CID_LENGTH ? -1 : blocks.indexOf(cid);
    if (op.action === 'delete' ? cid !== null : record < 0) {
      throw new CommitVerifyError('bad-proof', `${op.action} ${op.path}: its record block is ${cid === null ? 'not named' : 'not in the frame'}`);
    }
    if (record >= 0) keep.push(record);
    const prev = cids.ops[2 * i + 1]!;
    if (prev !== null && prev.length !== CID_LENGTH) throw new CommitVerifyError('commit-malformed', `${op.action} ${op.path}: prev ${op.prev} is not a repo CID`);
    proofOps[i] = { action: op.action, path: op.path, cid: cid !== null && cid.length === CID_LENGTH ? cid : null, prev };
  }

  // The link's own bytes when they are a repo CID (as cidFromString would give them), without decoding its string.
  const dataCid = commit.dataBytes?.length === CID_LENGTH && isRepoCid(commit.dataBytes, 0) ? commit.dataBytes : cidFromString(commit.data);
  if (dataCid === undefined) throw new CommitVerifyError('commit-malformed', `the commit's data ${commit.data} is not a repo CID`);
  if (cids.prevData !== null) {
    let root: Uint8Array;
    try {
      root = invertOps(blocks, dataCid, proofOps);
    } catch (err) {
      if (!(err instanceof MstProofError)) throw err;
      const why = err.problem === 'missing-block' ? `inverting the ops needs a block the frame lacks: ${err.message}` : `inverting the ops: ${err.message}`;
      throw new CommitVerifyError('bad-proof', why, { cause: err });
    }
    if (cids.prevData.length !== CID_LENGTH || !equalCid(root, cids.prevData)) {
      throw new CommitVerifyError('bad-proof', `inverting the ops gives data root ${cidString(root)}, not prevData ${frame.prevData}`);
    }
  }
  const before = keep.length;
  newTreeNodes(blocks, blocks.indexOf(dataCid), 0, keep);
  return { dataCid: commit.data, dataBytes: dataCid, car: blocks, keep, mstNodeCount: keep.length - before };
}

/**
 * The frame's ops as the store takes them.
 *
 * @throws CommitVerifyError `commit-malformed`: a path that is not `collection/rkey`
 */
export function commitOps(frame: CommitFrame): CommitOp[] {
  return frame.ops.map((op) => {
    const slash = pathSlash(op.path);
    return { action: op.action, collection: op.path.slice(0, slash), rkey: op.path.slice(slash + 1), cid: op.cid, prev: op.prev };
  });
}

/** `commitOps`' check alone, making nothing. */
function checkPaths(frame: CommitFrame): void {
  for (const op of frame.ops) pathSlash(op.path);
}

function pathSlash(path: string): number {
  const slash = path.indexOf('/');
  if (slash <= 0 || slash !== path.lastIndexOf('/') || slash === path.length - 1) {
    throw new CommitVerifyError('commit-malformed', `op path ${JSON.stringify(path)} is not collection/rkey`);
  }
  return slash;
}

/**
 * The MST nodes of the new tree that the frame carries: reached from the root through nodes in
 * the frame. Subtrees the frame leaves out are unchanged, and stored already.
 */
function newTreeNodes(blocks: BlockMap, index: number, depth: number, keep: number[]): void {
  if (index < 0 || depth > MAX_MST_HEIGHT) return;
  const bytes = blocks.dataAt(index);
  let node;
  try {
    // A node's entries are read while its subtrees are walked: one array per depth.
    node = decodeMstNode(bytes, layerScratch[depth]);
    layerScratch[depth] = node.entries;
  } catch (cause) {
    if (!(cause instanceof MstNodeFormatError)) throw cause;
    throw new CommitVerifyError('commit-malformed', `MST node ${blocks.cidStringAt(index)} does not decode: ${cause.message}`, { cause });
  }
  keep.push(index);
  if (node.left >= 0) newTreeNodes(blocks, blocks.indexOf(bytes, node.left), depth + 1, keep);
  for (let i = 0; i < node.count; i++) {
    const right = node.entries[i * ENTRY_FIELDS + RIGHT]!;
    if (right >= 0) newTreeNodes(blocks, blocks.indexOf(bytes, right), depth + 1, keep);
  }
}

const layerScratch: Int32Array[] = [];

function cidString(cid: Uint8Array): string {
  return cidToString(cid, 0);
}

export { SignatureError };
