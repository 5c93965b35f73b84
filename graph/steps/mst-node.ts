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
  const loaded = loadBlock(ctx, node.cid, node.loc, needBytes, ctx.wants('MstNodeToPack') ? 'MstNodeToPack' : null);
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
  const withSubtrees = subtrees && n.complete;
  // The node's CIDs copied into one buffer of their own, each a view of it: a view of the pack
  // would keep the whole pack alive for as long as a record waits its turn, and a copy each was
  // a buffer each.
  let count = read;
  if (withSubtrees) {
    if (n.left >= 0) count++;
    for (let i = 0; i < read; i++) if (n.entries[i * ENTRY_FIELDS + RIGHT]! >= 0) count++;
  }
  const own = new Uint8Array(count * CID_LENGTH);
  let next = 0;
  const copy = (at: number): Uint8Array => {
    // A link the decoder passed is whole; anything shorter keeps what there is, as it always did.
    if (at + CID_LENGTH > bytes.length) return bytes.slice(at, at + CID_LENGTH);
    const start = next * CID_LENGTH;
    for (let k = 0; k < CID_LENGTH; k++) own[start + k] = bytes[at + k]!;
    next++;
    return own.subarray(start, start + CID_LENGTH);
  };
  for (let i = 0; i < read; i++) {
    const path = n.keys[i]!;
    const cid = copy(n.entries[i * ENTRY_FIELDS + VALUE]!);
    data.leaves.push({ path, cid });
    if (records) edges.push({ type: 'MstNodeToRecord', node: { type: 'Record', cid }, path });
  }
  if (!withSubtrees) return;
  if (n.left >= 0) edges.push({ type: 'MstNodeToMstNode', node: { type: 'MstNode', cid: copy(n.left), pos: subtreePosition(n, pos, -1) } });
  for (let i = 0; i < read; i++) {
    const right = n.entries[i * ENTRY_FIELDS + RIGHT]!;
    if (right >= 0) edges.push({ type: 'MstNodeToMstNode', node: { type: 'MstNode', cid: copy(right), pos: subtreePosition(n, pos, i) } });
  }
}
