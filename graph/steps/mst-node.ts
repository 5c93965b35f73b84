/**
 * MstNode: one node of a repo's Merkle Search Tree. Steps to its subtrees (each told the layer
 * and the key range it must keep to), to its records (with their paths) and to its pack.
 *
 * The tree's invariants are checked here, node by node, so that the walk never has to hold a
 * whole tree: within a node, keys are valid paths, strictly ascending, maximally prefix-
 * compressed and all on the node's layer; across nodes, what the parent passed down — a
 * subtree is exactly one layer lower and its keys lie strictly between the keys around it.
 * Together these are the invariants `atproto/mst.ts` checks on a whole CAR.
 */
import { cidToString, latin1 } from '../../atproto/cid.ts';
import { keyLayer } from '../../atproto/key-layer.ts';
import { MAX_PATH_LENGTH, parsePath } from '../../atproto/mst.ts';
import { type MstNode, ENTRY_FIELDS, KEY_END, KEY_START, PREFIX, RIGHT, VALUE, decodeMstNode } from '../../atproto/mst-node.ts';
import type { MstPosition, NodeOf, OutEdge } from '../nodes.ts';
import type { StepContext, StepData, StepResult } from './context.ts';
import { loadBlock } from './load-block.ts';
import { andThen, type MaybePromise } from '../maybe-promise.ts';

/** Highest layer accepted, as `verifyRepo`'s default cap. */
const MAX_LAYER = 32;
const CID_LENGTH = 36;

// Key bytes of the node being read; a step reads one node synchronously, so one buffer serves.
const keyBytes = new Uint8Array(MAX_PATH_LENGTH);

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
  const problems = data.problems;
  let parsed: MstNode;
  try {
    parsed = decodeMstNode(bytes);
  } catch (err) {
    problems.push(`not an MST node: ${(err as Error).message}`);
    return;
  }
  const { left, count, entries } = parsed;
  const isRoot = pos?.root ?? false;
  if (count === 0) {
    // Below the root, a node with no keys and only a subtree is how the tree spans a layer that
    // has no keys in this range; the root must not be one, nor may any node be empty outright.
    if (left >= 0 && isRoot) problems.push('root node has no entries, only a subtree');
    if (left < 0 && !isRoot && pos) problems.push('empty node below the root');
    if (left >= 0) subtree(bytes, left, pos?.layer === undefined ? undefined : pos.layer - 1, pos?.lo, pos?.hi, edges, ctx, problems);
    return;
  }

  const layer = keyLayer(bytes.subarray(entries[KEY_START]!), entries[KEY_END]! - entries[KEY_START]!);
  data.layer = layer;
  if (layer > MAX_LAYER) {
    problems.push(`layer ${layer} is over the cap of ${MAX_LAYER}`);
    return;
  }
  if (pos?.layer !== undefined && layer !== pos.layer) problems.push(`node is on layer ${layer}, its parent is on layer ${pos.layer + 1}`);

  const keys: string[] = [];
  let keyLength = 0;
  let last = pos?.lo;
  for (let i = 0; i < count; i++) {
    const e = i * ENTRY_FIELDS;
    const prefix = entries[e + PREFIX]!;
    const keyStart = entries[e + KEY_START]!;
    const keyEnd = entries[e + KEY_END]!;
    const value = entries[e + VALUE]!;
    if (prefix > keyLength) {
      problems.push(`entry ${i}: prefix length ${prefix} is longer than the previous key`);
      return;
    }
    if (prefix < keyLength && keyEnd > keyStart && keyBytes[prefix] === bytes[keyStart]) {
      problems.push(`entry ${i}: prefix length ${prefix} is shorter than the shared prefix (not canonical)`);
    }
    const length = prefix + keyEnd - keyStart;
    if (length > MAX_PATH_LENGTH) {
      problems.push(`entry ${i}: key of ${length} bytes is longer than ${MAX_PATH_LENGTH}`);
      return;
    }
    keyBytes.set(bytes.subarray(keyStart, keyEnd), prefix);
    keyLength = length;
    // One char per byte: a valid path is ASCII, where string order is byte order.
    const key = latin1(keyBytes, 0, keyLength);
    if (parsePath(key) < 0) problems.push(`key ${JSON.stringify(key)} is not a valid collection/rkey path`);
    if (last !== undefined && key <= last) problems.push(`key ${JSON.stringify(key)} does not sort after ${JSON.stringify(last)}`);
    if (pos?.hi !== undefined && key >= pos.hi) problems.push(`key ${JSON.stringify(key)} does not sort before ${JSON.stringify(pos.hi)}, the key after this subtree`);
    const keyLayerOf = keyLayer(keyBytes, keyLength);
    if (keyLayerOf !== layer) problems.push(`key ${JSON.stringify(key)} of layer ${keyLayerOf} is in a node of layer ${layer}`);
    last = key;
    keys.push(key);
    // Copied: a view would keep the whole pack alive for as long as the record waits its turn.
    const cid = bytes.slice(value, value + CID_LENGTH);
    data.leaves.push({ path: key, cid });
    if (ctx.wants('MstNodeToRecord')) edges.push({ type: 'MstNodeToRecord', node: { type: 'Record', cid }, path: key });
  }

  if (left >= 0) subtree(bytes, left, layer - 1, pos?.lo, keys[0], edges, ctx, problems);
  for (let i = 0; i < count; i++) {
    const right = entries[i * ENTRY_FIELDS + RIGHT]!;
    if (right >= 0) subtree(bytes, right, layer - 1, keys[i], keys[i + 1] ?? pos?.hi, edges, ctx, problems);
  }
}

function subtree(bytes: Uint8Array, at: number, layer: number | undefined, lo: string | undefined, hi: string | undefined, edges: OutEdge[], ctx: StepContext, problems: string[]): void {
  if (layer !== undefined && layer < 0) {
    problems.push(`node of layer 0 has a subtree ${cidToString(bytes, at)}`);
    return;
  }
  if (!ctx.wants('MstNodeToMstNode')) return;
  const pos: MstPosition = { root: false };
  if (layer !== undefined) pos.layer = layer;
  if (lo !== undefined) pos.lo = lo;
  if (hi !== undefined) pos.hi = hi;
  edges.push({ type: 'MstNodeToMstNode', node: { type: 'MstNode', cid: bytes.slice(at, at + CID_LENGTH), pos } });
}
