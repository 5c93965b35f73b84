/**
 * Verifies a firehose `#commit` against the DID's key and, where it carries `prevData` (sync
 * v1.1), against its own proof: inverting its ops on the new tree (built from the frame's
 * blocks) must give the previous data root. The store then checks that root against the stored
 * one, so that applying the ops to the stored tree is known to give the new tree without
 * loading it.
 */
import { MemoryBlockStore, MSTNode, NodeStore, NodeWrangler } from '@atcute/mst';
import { readCar } from '../atproto/car.ts';
import { readCommit } from '../atproto/commit.ts';
import { verifyCommitSignature } from '../atproto/signature.ts';
import { InvalidRepoError, SignatureError } from '../atproto/errors.ts';
import type { CommitChange, CommitOp } from '../ingest/changes.ts';
import { CommitVerifyError } from './errors.ts';
import type { Frame } from './frames.ts';

export type CommitFrame = Extract<Frame, { t: '#commit' }>;

/** Highest MST layer walked in a frame's blocks; as in verifyRepo, far above any honest tree. */
const MAX_MST_HEIGHT = 32;

/**
 * The commit as a change for the store, or a named refusal.
 *
 * @throws SignatureError the signature does not verify with `signingKey` (the caller resolves
 *   the DID again once, then gives up with `bad-signature`)
 * @throws CommitVerifyError `commit-malformed` or `bad-proof`
 */
export async function verifyCommitFrame(frame: CommitFrame, signingKey: string): Promise<CommitChange> {
  let car;
  let commit;
  try {
    car = readCar(frame.blocks, { maxBytes: frame.blocks.length, maxBlocks: 10_000 });
    commit = readCommit(car.blocks, frame.commit, frame.repo);
  } catch (err) {
    if (err instanceof InvalidRepoError) throw new CommitVerifyError('commit-malformed', `commit ${frame.rev} of ${frame.repo}: ${err.message}`, { cause: err });
    throw err;
  }
  if (commit.rev !== frame.rev) throw new CommitVerifyError('commit-malformed', `the commit's rev ${commit.rev} is not the frame's ${frame.rev}`);
  await verifyCommitSignature(commit, frame.commit, signingKey); // SignatureError for the caller

  const blocks = new Map<string, Uint8Array<ArrayBuffer>>();
  for (const [cid, bytes] of car.blocks) blocks.set(cid, bytes as Uint8Array<ArrayBuffer>);
  const ops: CommitOp[] = frame.ops.map((op) => {
    const slash = op.path.indexOf('/');
    if (slash <= 0 || slash !== op.path.lastIndexOf('/') || slash === op.path.length - 1) {
      throw new CommitVerifyError('commit-malformed', `op path ${JSON.stringify(op.path)} is not collection/rkey`);
    }
    if (op.action === 'delete' ? op.cid !== null : op.cid === null || !blocks.has(op.cid)) {
      throw new CommitVerifyError('bad-proof', `${op.action} ${op.path}: its record block is ${op.cid === null ? 'not named' : 'not in the frame'}`);
    }
    return { action: op.action, collection: op.path.slice(0, slash), rkey: op.path.slice(slash + 1), cid: op.cid, prev: op.prev };
  });

  if (frame.prevData !== undefined) {
    const wrangler = new NodeWrangler(new NodeStore(new MemoryBlockStore(new Map(blocks))));
    let root: string | null = commit.data;
    try {
      for (const op of [...frame.ops].reverse()) {
        if (op.action === 'create') root = await wrangler.deleteRecord(root, op.path);
        else {
          if (op.prev === null) throw new CommitVerifyError('bad-proof', `${op.action} ${op.path} carries no prev`);
          root = await wrangler.putRecord(root, op.path, { $link: op.prev });
        }
      }
    } catch (err) {
      if (err instanceof CommitVerifyError) throw err;
      throw new CommitVerifyError('bad-proof', `inverting the ops needs a block the frame lacks: ${(err as Error).message}`, { cause: err });
    }
    if (root !== frame.prevData) {
      throw new CommitVerifyError('bad-proof', `inverting the ops gives data root ${root}, not prevData ${frame.prevData}`);
    }
  }
  return {
    kind: 'commit',
    did: frame.repo,
    rev: frame.rev,
    since: frame.since,
    commitCid: frame.commit,
    dataCid: commit.data,
    prevData: frame.prevData,
    ops,
    blocks,
    mstNodes: await newTreeNodes(commit.data, blocks),
  };
}

/**
 * The MST nodes of the new tree that the frame carries: reached from the root through nodes in
 * the frame. Subtrees the frame leaves out are unchanged, and stored already.
 */
async function newTreeNodes(root: string, blocks: Map<string, Uint8Array>): Promise<string[]> {
  const out: string[] = [];
  const walk = async (cid: string, depth: number): Promise<void> => {
    const bytes = blocks.get(cid);
    if (!bytes || depth > MAX_MST_HEIGHT) return;
    let node: MSTNode;
    try {
      node = await MSTNode.deserialize(bytes);
    } catch (cause) {
      throw new CommitVerifyError('commit-malformed', `MST node ${cid} does not decode`, { cause });
    }
    out.push(cid);
    for (const s of node.subtrees) if (s) await walk(s.$link, depth + 1);
  };
  await walk(root, 0);
  return out;
}

export { SignatureError };
