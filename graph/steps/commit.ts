/**
 * Commit: the head block of a repo. Decoded with the atproto commit reader (version, DID, data
 * root, rev, signature bytes); steps to the MST root and to the pack that holds it.
 */
import * as CBOR from '@atcute/cbor';
import { type Commit, readCommit } from '../../atproto/commit.ts';
import { BlockMap } from '../../atproto/block-map.ts';
import { cidFromString, cidToString } from '../../atproto/cid.ts';
import type { NodeOf, OutEdge } from '../nodes.ts';
import type { StepContext, StepResult } from './context.ts';
import { loadBlock } from './load-block.ts';
import { andThen, type MaybePromise } from '../maybe-promise.ts';

/** Synchronous when the head's block is in memory (located by the Repo read, its pack cached), as most are. */
export function stepCommit(node: NodeOf<'Commit'>, ctx: StepContext): MaybePromise<StepResult<'Commit'>> {
  const needBytes = ctx.needs.blockBytes || ctx.wants('CommitToMstNode');
  const loaded = loadBlock(ctx, node.cid, node.loc, needBytes, (key) => (ctx.wants('CommitToPack') ? { type: 'CommitToPack', node: { type: 'Pack', key } } : null));
  return andThen(loaded, ({ packEdges, ...block }) => {
    let commit: Commit | null = null;
    let decodeError: string | null = null;
    if (block.bytes && block.hashOk) {
      try {
        commit = decodeCommit(cidToString(node.cid, 0), block.bytes, node.repo?.did);
      } catch (err) {
        decodeError = (err as Error).message;
      }
    }
    const edges: OutEdge[] = packEdges;
    const data = commit ? cidFromString(commit.data) : undefined;
    if (data && ctx.wants('CommitToMstNode')) edges.push({ type: 'CommitToMstNode', node: { type: 'MstNode', cid: data, pos: { root: true } } });
    return { data: { ...block, commit, decodeError }, edges, bytes: block.bytes?.length ?? 0 };
  });
}

/**
 * The commit in `bytes`, checked by `readCommit` against `did` (or, for a commit reached without
 * its repo, against the DID it names).
 * @throws CommitError when it is not an acceptable v3 commit.
 */
export function decodeCommit(cid: string, bytes: Uint8Array, did: string | undefined): Commit {
  // readCommit reads from a block map; this one holds the single block (its CID, then its bytes).
  const one = new BlockMap(1);
  const cidBytes = cidFromString(cid);
  if (cidBytes !== undefined) {
    const framed = new Uint8Array(cidBytes.length + bytes.length);
    framed.set(cidBytes, 0);
    framed.set(bytes, cidBytes.length);
    one.add(framed, 0, framed.length);
  }
  if (did === undefined) {
    const value = CBOR.decode(bytes) as { did?: unknown } | null;
    did = typeof value?.did === 'string' ? value.did : '';
  }
  return readCommit(one, cid, did, cidBytes);
}
