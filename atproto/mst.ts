/**
 * Walks a repository's Merkle Search Tree in key order and checks every invariant that makes
 * it the one canonical tree for its keys: keys strictly ascending, each key on the layer its
 * hash gives and each subtree exactly one layer down, keys valid `collection/rkey` paths,
 * prefix compression maximal, no empty nodes, height under the cap; and that every node and
 * record block is present.
 *
 * Hand-written: `@atcute/repo`'s reader checks order and paths but not layers, and reports a
 * missing block only as an assertion message. The walk reads nodes in place (`mst-node.ts`),
 * looks blocks up by the CID bytes inside the node, and keeps the records in a compact
 * `RecordList` (key bytes and block indexes); the one string per key it makes, to check the key,
 * is garbage at once.
 */
import { isNsid, isRecordKey } from '@atcute/lexicons/syntax';
import type { BlockMap } from './block-map.ts';
import { cidToString, latin1 } from './cid.ts';
import { MissingBlockError, MstError } from './errors.ts';
import { keyLayer } from './key-layer.ts';
import { RecordList, type RepoRecord } from './record-list.ts';
import { ENTRY_FIELDS, KEY_END, KEY_START, type MstNode, MstNodeFormatError, PREFIX, RIGHT, VALUE, decodeMstNode } from './mst-node.ts';

export type { RepoRecord };

export interface MstContents {
  /** Every record, in MST (path byte) order. */
  records: RecordList;
  /** Block indexes of the MST nodes, parents before children. */
  nodes: number[];
  /** Layer of the root node; 0 for an empty tree or a single leaf node. */
  height: number;
}

/** Longest repo path the MST accepts (atproto repository spec). */
export const MAX_PATH_LENGTH = 1024;

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
 * @throws MstError an invariant is broken; names the node, and the key where one applies
 */
export function readMst(blocks: BlockMap, root: number, maxHeight: number, reached: Uint8Array, maxKeyBytes = Infinity): MstContents {
  const walk: Walk = { blocks, reached, maxHeight, maxKeyBytes, records: new RecordList(blocks), nodes: [], height: 0, lastKey: '', lastCollection: '', keys: [], entries: [] };
  visit(walk, root, -1);
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
  /** Last key in tree order: every key must sort after it. */
  lastKey: string;
  /** Last collection that passed validation; the records of a collection share this string. */
  lastCollection: string;
  /**
   * Key bytes per layer. A node's keys share prefixes with the key before them in the same
   * node, which stays in place here while the walk is down in lower layers.
   */
  keys: Uint8Array[];
  /** Decoded entries per layer, reused from node to node of that layer. */
  entries: (Int32Array | undefined)[];
}

/** Visits node `index` and, in key order, its subtrees; `height` -1 means the root. */
function visit(walk: Walk, index: number, height: number): void {
  const { blocks } = walk;
  const bytes = blocks.dataAt(index);
  walk.reached[index] = 1;
  walk.nodes.push(index);
  // The root's layer is known only once it is decoded; it gets a fresh entry array.
  let node: MstNode;
  try {
    node = decodeMstNode(bytes, height >= 0 ? walk.entries[height] : undefined);
  } catch (error) {
    if (error instanceof MstNodeFormatError) throw new MstError('mst-malformed', blocks.cidStringAt(index), error.message);
    throw error;
  }
  const { left, count, entries } = node;

  if (height < 0) {
    if (count === 0) {
      if (left >= 0) throw new MstError('mst-non-canonical', blocks.cidStringAt(index), 'root node has no entries, only a subtree');
      return; // the empty repository
    }
    // The first key of a node has no prefix, so its bytes are the key.
    height = keyLayer(bytes.subarray(entries[KEY_START]!), entries[KEY_END]! - entries[KEY_START]!);
    if (height > walk.maxHeight) {
      throw new MstError('mst-depth', blocks.cidStringAt(index), `tree height ${height} is over the cap of ${walk.maxHeight}`);
    }
    walk.height = height;
  } else if (count === 0 && left < 0) {
    throw new MstError('mst-non-canonical', blocks.cidStringAt(index), 'empty node below the root');
  }

  walk.entries[height] = entries;
  if (left >= 0) visitSubtree(walk, index, bytes, left, height);
  const keyBytes = (walk.keys[height] ??= new Uint8Array(MAX_PATH_LENGTH));
  let keyLength = 0;
  for (let i = 0; i < count; i++) {
    const at = i * ENTRY_FIELDS;
    const prefix = entries[at + PREFIX]!;
    const keyStart = entries[at + KEY_START]!;
    const keyEnd = entries[at + KEY_END]!;
    const value = entries[at + VALUE]!;
    const right = entries[at + RIGHT]!;
    if (prefix > keyLength) {
      throw new MstError('mst-malformed', blocks.cidStringAt(index), `entry ${i}: prefix length ${prefix} is longer than the previous key`);
    }
    // The shared prefix must be the longest one, or the node's bytes (and CID) are not canonical.
    if (prefix < keyLength && keyEnd > keyStart && keyBytes[prefix] === bytes[keyStart]) {
      throw new MstError('mst-non-canonical', blocks.cidStringAt(index), `entry ${i}: prefix length ${prefix} is shorter than the shared prefix`);
    }
    keyLength = prefix + keyEnd - keyStart;
    if (keyLength > MAX_PATH_LENGTH) {
      throw new MstError('mst-path', blocks.cidStringAt(index), `entry ${i}: key of ${keyLength} bytes is longer than ${MAX_PATH_LENGTH}`);
    }
    for (let from = keyStart, to = prefix; from < keyEnd; ) keyBytes[to++] = bytes[from++]!;
    // One char per byte: a valid path is ASCII, so string order is byte order; any other byte
    // becomes a char that the path check refuses.
    const key = latin1(keyBytes, 0, keyLength);
    const slash = checkPath(walk, key);
    if (slash < 0) throw new MstError('mst-path', blocks.cidStringAt(index), 'key is not a valid collection/rkey path', key);
    if (key <= walk.lastKey) {
      throw new MstError('mst-unsorted', blocks.cidStringAt(index), `key does not sort after ${JSON.stringify(walk.lastKey)}`, key);
    }
    walk.lastKey = key;
    const layer = keyLayer(keyBytes, keyLength);
    if (layer !== height) {
      throw new MstError('mst-layer', blocks.cidStringAt(index), `key of layer ${layer} is in a node of layer ${height}`, key);
    }
    const record = blocks.indexOf(bytes, value);
    if (record < 0) throw new MissingBlockError(cidToString(bytes, value), 'record', key);
    walk.reached[record] = 1;
    if (walk.records.keyBytes + keyLength > walk.maxKeyBytes) {
      throw new MstError('mst-path', blocks.cidStringAt(index), `keys written out take more than ${walk.maxKeyBytes} bytes, the cap for this CAR`, key);
    }
    walk.records.push(keyBytes, keyLength, slash, walk.lastCollection, record);
    if (right >= 0) visitSubtree(walk, index, bytes, right, height);
  }
}

function visitSubtree(walk: Walk, parent: number, bytes: Uint8Array, link: number, height: number): void {
  const index = walk.blocks.indexOf(bytes, link);
  if (height === 0) {
    throw new MstError('mst-layer', walk.blocks.cidStringAt(parent), `node of layer 0 has a subtree ${cidToString(bytes, link)}`);
  }
  if (index < 0) throw new MissingBlockError(cidToString(bytes, link), 'mst-node');
  visit(walk, index, height - 1);
}

/**
 * The index of the slash of `key` if it is a valid path, else -1. The collection is checked only
 * when it changes (keys come in order, so a collection's keys are consecutive) and is then kept
 * in `walk.lastCollection`.
 */
function checkPath(walk: Walk, key: string): number {
  const last = walk.lastCollection;
  let slash = last.length;
  if (!(slash > 0 && key.charCodeAt(slash) === 0x2f && key.startsWith(last))) {
    slash = key.indexOf('/');
    if (slash <= 0) return -1;
    const collection = key.slice(0, slash);
    if (!isNsid(collection)) return -1;
    walk.lastCollection = collection;
  }
  return isRecordKey(key.slice(slash + 1)) ? slash : -1;
}
