/**
 * Commit: the head block of a repo. Decoded with the atproto commit reader (version, DID, data
 * root, rev, signature bytes); steps to the MST root and to the pack that holds it.
 */
import * as CBOR from '@atcute/cbor';
import { type Commit, readAnyCommit, readStandardCommit } from '../../atproto/commit.ts';
import { CODEC_DCBOR, cidFromString, cidToString } from '../../atproto/cid.ts';
import { CommitError, MissingBlockError } from '../../atproto/errors.ts';
import type { NodeOf, OutEdge } from '../nodes.ts';
import type { StepContext, StepResult } from './context.ts';
import { loadBlock } from './load-block.ts';
import { andThen, type MaybePromise } from '../maybe-promise.ts';

/** Synchronous when the head's block is in memory (located by the Repo read, its pack cached), as most are. */
export function stepCommit(node: NodeOf<'Commit'>, ctx: StepContext): MaybePromise<StepResult<'Commit'>> {
  const needBytes = ctx.needs.blockBytes || ctx.wants('CommitToMstNode');
  const loaded = loadBlock(ctx, node.cid, node.loc, needBytes, ctx.wants('CommitToPack') ? 'CommitToPack' : null);
  return andThen(loaded, ({ packEdges, ...block }) => {
    let commit: Commit | null = null;
    let decodeError: string | null = null;
    if (block.bytes && block.hashOk) {
      try {
        commit = decodeCommit(cidToString(node.cid, 0), block.bytes, node.repo?.did, node.cid);
      } catch (err) {
        decodeError = (err as Error).message;
      }
    }
    const edges: OutEdge[] = packEdges;
    // The decoder read the data root's bytes: copied (a view would hold the pack), not parsed again from its text.
    const data = commit ? (commit.dataBytes?.slice() ?? cidFromString(commit.data)) : undefined;
    if (data && ctx.wants('CommitToMstNode')) edges.push({ type: 'CommitToMstNode', node: { type: 'MstNode', cid: data, pos: { root: true } } });
    return { data: { ...block, commit, decodeError }, edges, bytes: block.bytes?.length ?? 0 };
  });
}

/**
 * The commit in `bytes`, checked as `readCommit` checks a commit block against `did` (or, for a
 * commit reached without its repo, against the DID it names). `cidBytes` is `cid` as bytes, when
 * the caller has them.
 * @throws CommitError when it is not an acceptable v3 commit; MissingBlockError when `cid` is not a CID.
 */
export function decodeCommit(cid: string, bytes: Uint8Array, did: string | undefined, cidBytes: Uint8Array | undefined = cidFromString(cid)): Commit {
  if (did === undefined) {
    const value = CBOR.decode(bytes) as { did?: unknown } | null;
    did = typeof value?.did === 'string' ? value.did : '';
  }
  // `readCommit`'s steps for a map of this one block, without the map (an allocation of its
  // tables, and a copy of the block, for every repo a walk steps).
  if (cidBytes === undefined) throw new MissingBlockError(cid, 'commit');
  if (cidBytes[1] !== CODEC_DCBOR) throw new CommitError('commit-malformed', cid, 'the commit CID is not of codec dag-cbor');
  return readStandardCommit(bytes, did) ?? readAnyCommit(bytes, cid, did);
}
