/**
 * Walks a repository's Merkle Search Tree in key order, checking each node with
 * `checkMstNode` (the invariants that make it the one canonical tree for its keys, shared with
 * the validate walk) and throwing on the first problem; and checks that every node and record
 * block is present.
 *
 * Hand-written: `@atcute/repo`'s reader checks order and paths but not layers, and reports a
 * missing block only as an assertion message. The walk reads nodes in place (`mst-node.ts`),
 * looks blocks up by the CID bytes inside the node, and keeps the records in a compact
 * `RecordList` (key bytes and block indexes), not as an object per record.
 */
import { isNsid, isRecordKey } from '@atcute/lexicons/syntax';
import type { BlockMap } from './block-map.ts';
import { cidToString } from './cid.ts';
import { MissingBlockError, MstError } from './errors.ts';
import { type CheckedMstNode, MAX_PATH_LENGTH, type MstPosition, checkMstNode, emptyCheckedNode, subtreePosition } from './mst-check.ts';
import { ENTRY_FIELDS, RIGHT, VALUE } from './mst-node.ts';
import { RecordList, type RepoRecord } from './record-list.ts';

export { MAX_PATH_LENGTH } from './mst-check.ts';

export type { RepoRecord };

export interface MstContents {
  /** Every record, in MST (path byte) order. */
  records: RecordList;
  /** Block indexes of the MST nodes, parents before children. */
  nodes: number[];
  /** Layer of the root node; 0 for an empty tree or a single leaf node. */
  height: number;
}

/**
 * Whether `path` is a valid repo path, `<NSID>/<record key>` (ASCII, at most 1024 bytes); returns
 * the index of the slash, or -1.
 */
export function parsePath(path: string): number {
  if (path.length > MAX_PATH_LENGTH) return -1;
  const slash = path.indexOf('/');
  if (slash <= 0 || !isNsid(path.slice(0, slash)) || !isRecordKey(path.slice(slash + 1))) return -1;
  return slash;
}

/**
 * Reads the tree whose root node is block `root` of `blocks`.
 *
 * @param maxHeight refuse a tree whose root is above this layer (this bounds the recursion)
 * @param maxKeyBytes refuse a tree whose keys, written out in full, take more bytes than this:
 *   keys are prefix-compressed in the nodes and many entries may name one record block, so a
 *   small CAR could otherwise spell out gigabytes of keys
 * @param reached set to 1 at the index of every block the tree reaches (nodes and records)
 * @throws MissingBlockError an MST node or record block is not in `blocks`
 * @throws MstError an invariant is broken (the first `checkMstNode` finds); names the node, and
 *   the key where one applies
 */
export function readMst(blocks: BlockMap, root: number, maxHeight: number, reached: Uint8Array, maxKeyBytes = Infinity): MstContents {
  const walk: Walk = { blocks, reached, maxHeight, maxKeyBytes, records: new RecordList(blocks), nodes: [], height: 0, checked: [] };
  visit(walk, root, { root: true });
  walk.records.trim();
  return { records: walk.records, nodes: walk.nodes, height: walk.height };
}

interface Walk {
  blocks: BlockMap;
  reached: Uint8Array;
  maxHeight: number;
  maxKeyBytes: number;
  records: RecordList;
  nodes: number[];
  height: number;
  /**
   * A checked node per layer, reused from node to node of that layer: a node's keys stay in
   * place while the walk is down in its subtrees, which are all on lower layers.
   */
  checked: CheckedMstNode[];
}

/** Visits node `index`, placed at `pos`, and, in key order, its subtrees. */
function visit(walk: Walk, index: number, pos: MstPosition): void {
  const { blocks } = walk;
  const bytes = blocks.dataAt(index);
  walk.reached[index] = 1;
  walk.nodes.push(index);
  // The root's layer is known only once it is read: it gets a node of its own.
  const into = pos.layer === undefined ? undefined : (walk.checked[pos.layer] ??= emptyCheckedNode());
  const node = checkMstNode(bytes, pos, walk.maxHeight, into);
  const problem = node.problems[0];
  if (problem) throw new MstError(problem.code, blocks.cidStringAt(index), problem.message, problem.key);
  if (pos.root) walk.height = Math.max(node.layer, 0);

  const { entries, keys, collections } = node;
  if (node.left >= 0) visitSubtree(walk, bytes, node.left, subtreePosition(node, pos, -1));
  for (let i = 0; i < node.count; i++) {
    const at = i * ENTRY_FIELDS;
    const key = keys[i]!;
    const collection = collections[i]!;
    const value = entries[at + VALUE]!;
    const record = blocks.indexOf(bytes, value);
    if (record < 0) throw new MissingBlockError(cidToString(bytes, value), 'record', key);
    walk.reached[record] = 1;
    if (walk.records.keyBytes + key.length > walk.maxKeyBytes) {
      throw new MstError('mst-path', blocks.cidStringAt(index), `keys written out take more than ${walk.maxKeyBytes} bytes, the cap for this CAR`, key);
    }
    walk.records.pushPath(key, collection, record);
    const right = entries[at + RIGHT]!;
    if (right >= 0) visitSubtree(walk, bytes, right, subtreePosition(node, pos, i));
  }
}

function visitSubtree(walk: Walk, bytes: Uint8Array, link: number, pos: MstPosition): void {
  const index = walk.blocks.indexOf(bytes, link);
  if (index < 0) throw new MissingBlockError(cidToString(bytes, link), 'mst-node');
  visit(walk, index, pos);
}
