/**
 * MstNode: one node of a repo's Merkle Search Tree. Steps to its subtrees (each told the layer
 * and the key range it must keep to), to its records (with their paths) and to its pack.
 *
 * The tree's invariants are checked here, node by node, with the function import uses
 * (`atproto/mst-check.ts`), so that the walk never has to hold a whole tree and validate never
 * disagrees with import on what a valid tree is; every problem is recorded, not only the first.
 */
import { DEFAULT_REPO_CAPS } from '../../atproto/verify.ts';
import { type MstPosition, checkMstNode, emptyCheckedNode, formatMstProblem, subtreePosition } from '../../atproto/mst-check.ts';
import { ENTRY_FIELDS, RIGHT, VALUE } from '../../atproto/mst-node.ts';
import type { NodeOf, OutEdge } from '../nodes.ts';
import type { StepContext, StepData, StepResult } from './context.ts';
import { loadBlock } from './load-block.ts';
import { andThen, type MaybePromise } from '../maybe-promise.ts';

const CID_LENGTH = 36;

// A step reads one node synchronously, so one checked node serves every step.
const checked = emptyCheckedNode();

export function stepMstNode(node: NodeOf<'MstNode'>, ctx: StepContext): MaybePromise<StepResult<'MstNode'>> {
  const needBytes = ctx.needs.blockBytes || ctx.wants('MstNodeToMstNode') || ctx.wants('MstNodeToRecord');
  const loaded = loadBlock(ctx, node.cid, node.loc, needBytes, (key) => (ctx.wants('MstNodeToPack') ? { type: 'MstNodeToPack', node: { type: 'Pack', key } } : null));
  return andThen(loaded, ({ packEdges, loc, bytes, hashOk }) => {
    const edges: OutEdge[] = packEdges;
    const data: StepData['MstNode'] = { loc, bytes, hashOk, layer: -1, leaves: [], problems: [] };
    if (bytes && hashOk) readNode(bytes, node.pos, data, edges, ctx);
    return { data, edges, bytes: bytes?.length ?? 0 };
  });
}

function readNode(bytes: Uint8Array, pos: MstPosition | undefined, data: StepData['MstNode'], edges: OutEdge[], ctx: StepContext): void {
  const n = checkMstNode(bytes, pos, DEFAULT_REPO_CAPS.maxMstHeight, checked);
  for (const p of n.problems) data.problems.push(formatMstProblem(p));
  data.layer = n.layer;
  const records = ctx.wants('MstNodeToRecord');
  const subtrees = ctx.wants('MstNodeToMstNode') && n.layer !== 0;
  // The entries whose keys were read: all of them, unless a problem stopped the reading.
  const read = n.keys.length;
  for (let i = 0; i < read; i++) {
    const path = n.keys[i]!;
    const value = n.entries[i * ENTRY_FIELDS + VALUE]!;
    // Copied: a view would keep the whole pack alive for as long as the record waits its turn.
    const cid = bytes.slice(value, value + CID_LENGTH);
    data.leaves.push({ path, cid });
    if (records) edges.push({ type: 'MstNodeToRecord', node: { type: 'Record', cid }, path });
  }
  if (!subtrees || !n.complete) return;
  if (n.left >= 0) subtree(bytes, n.left, subtreePosition(n, pos, -1), edges);
  for (let i = 0; i < read; i++) {
    const right = n.entries[i * ENTRY_FIELDS + RIGHT]!;
    if (right >= 0) subtree(bytes, right, subtreePosition(n, pos, i), edges);
  }
}

function subtree(bytes: Uint8Array, at: number, pos: MstPosition, edges: OutEdge[]): void {
  edges.push({ type: 'MstNodeToMstNode', node: { type: 'MstNode', cid: bytes.slice(at, at + CID_LENGTH), pos } });
}
