/**
 * The invariants of one MST node, written once: import (`mst.ts`, which throws on the first
 * problem) and the validate walk (`graph/steps/mst-node.ts`, which records them all) both ask
 * `checkMstNode`, so they cannot disagree on what a valid tree is.
 *
 * A node is judged against where its parent placed it (`MstPosition`): within the node, keys
 * are valid `collection/rkey` paths, strictly ascending, maximally prefix-compressed and all on
 * the node's layer; against the tree, the node is on the layer below its parent's, its keys lie
 * strictly between the keys around its subtree, a node below the root is never empty, the root
 * is not an empty node over a subtree, the tree is no taller than the cap, and a node of layer 0
 * has no subtrees. Checked node by node, these are every invariant of the whole tree — strict
 * bounds passed down make the in-order sequence of keys strictly ascending — so neither caller
 * has to hold the whole tree.
 */
import { isNsid, isRecordKey } from '@atcute/lexicons/syntax';
import { cidToString, latin1 } from './cid.ts';
import type { MstErrorCode } from './errors.ts';
import { keyLayer } from './key-layer.ts';
import { ENTRY_FIELDS, KEY_END, KEY_START, MstNodeFormatError, PREFIX, RIGHT, decodeMstNode } from './mst-node.ts';

/** Longest repo path the MST accepts (atproto repository spec). */
export const MAX_PATH_LENGTH = 1024;

/** Where an MST node sits in its tree, as its parent saw it: what the node must agree with. */
export interface MstPosition {
  /** The tree's root (reached from a commit): its layer is the tree's height. */
  root: boolean;
  /** The layer this node must be on (parent's layer − 1); absent for a root. */
  layer?: number | undefined;
  /** Every key in this subtree sorts strictly after `lo` and before `hi`, where given. */
  lo?: string | undefined;
  hi?: string | undefined;
}

/** One broken invariant: the code import's `MstError` carries, a sentence, and the key where one applies. */
export interface MstProblem {
  code: MstErrorCode;
  message: string;
  key?: string;
}

/** A node as `checkMstNode` read it. Reusable: pass it back in as `into` and its arrays are refilled. */
export interface CheckedMstNode {
  /** The layer the node is judged on: its parent's minus one, or for a root its first key's; -1 when neither is known. */
  layer: number;
  /** Offset of the left subtree's CID bytes, or -1. */
  left: number;
  /** Entries decoded (`mst-node.ts` layout; `VALUE` and `RIGHT` give the record's and right subtree's CID offsets). */
  count: number;
  entries: Int32Array;
  /** The key of each entry read, in order; fewer than `count` when reading stopped early. */
  keys: string[];
  /** The collection of each key that is a valid path ('' otherwise); equal collections are one string. */
  collections: string[];
  problems: MstProblem[];
  /** False when a problem stopped the reading: `keys` may be fewer than the entries, and the subtrees are not to be followed. */
  complete: boolean;
}

export function emptyCheckedNode(): CheckedMstNode {
  return { layer: -1, left: -1, count: 0, entries: new Int32Array(0), keys: [], collections: [], problems: [], complete: true };
}

/** Formats a problem as import's `MstError` does after the node's CID. */
export function formatMstProblem(p: MstProblem): string {
  return p.key === undefined ? p.message : `${p.message} (key ${JSON.stringify(p.key)})`;
}

// Key bytes of the node being read: one node is read at a time, synchronously.
const keyBytes = new Uint8Array(MAX_PATH_LENGTH);
// The last collection that passed the NSID check: keys come in order, so a collection's keys
// are consecutive and its name is checked once, and its records share one string.
let lastCollection = '';

/**
 * Every broken invariant of the node in `bytes`, placed at `pos` (unknown position: judged as a
 * node of its own first key's layer, with no bounds), in a tree whose height may not exceed
 * `maxHeight`. Never throws on bad bytes: an undecodable node is an `mst-malformed` problem.
 */
export function checkMstNode(bytes: Uint8Array, pos: MstPosition | undefined, maxHeight: number, into: CheckedMstNode = emptyCheckedNode()): CheckedMstNode {
  const out = into;
  out.layer = -1;
  out.left = -1;
  out.count = 0;
  out.keys.length = 0;
  out.collections.length = 0;
  out.problems.length = 0;
  out.complete = false;
  const problems = out.problems;
  try {
    const node = decodeMstNode(bytes, out.entries.length > 0 ? out.entries : undefined);
    out.left = node.left;
    out.count = node.count;
    out.entries = node.entries;
  } catch (err) {
    if (!(err instanceof MstNodeFormatError)) throw err;
    problems.push({ code: 'mst-malformed', message: err.message });
    return out;
  }
  const { left, count, entries } = out;
  const isRoot = pos?.root ?? false;
  const expected = pos?.layer;

  if (count === 0) {
    // Below the root, a node with no keys and only a subtree is how the tree spans a layer that
    // has no keys in this range; the root must not be one, nor may any node be empty outright.
    if (left >= 0 && isRoot) problems.push({ code: 'mst-non-canonical', message: 'root node has no entries, only a subtree' });
    if (left < 0 && !isRoot && pos) problems.push({ code: 'mst-non-canonical', message: 'empty node below the root' });
    out.layer = expected ?? -1;
    if (left >= 0 && expected === 0) problems.push(subtreeOnLayer0(bytes, left));
    out.complete = true;
    return out;
  }

  // The first key of a node has no prefix, so its bytes are the key.
  const layer = expected ?? keyLayer(bytes.subarray(entries[KEY_START]!), entries[KEY_END]! - entries[KEY_START]!);
  out.layer = layer;
  if (expected === undefined && layer > maxHeight) {
    problems.push({ code: 'mst-depth', message: isRoot ? `tree height ${layer} is over the cap of ${maxHeight}` : `layer ${layer} is over the cap of ${maxHeight}` });
    return out;
  }
  if (left >= 0 && layer === 0) problems.push(subtreeOnLayer0(bytes, left));

  let keyLength = 0;
  let last = pos?.lo;
  const hi = pos?.hi;
  for (let i = 0; i < count; i++) {
    const at = i * ENTRY_FIELDS;
    const prefix = entries[at + PREFIX]!;
    const keyStart = entries[at + KEY_START]!;
    const keyEnd = entries[at + KEY_END]!;
    if (prefix > keyLength) {
      problems.push({ code: 'mst-malformed', message: `entry ${i}: prefix length ${prefix} is longer than the previous key` });
      return out;
    }
    // The shared prefix must be the longest one, or the node's bytes (and CID) are not canonical.
    if (prefix < keyLength && keyEnd > keyStart && keyBytes[prefix] === bytes[keyStart]) {
      problems.push({ code: 'mst-non-canonical', message: `entry ${i}: prefix length ${prefix} is shorter than the shared prefix` });
    }
    const length = prefix + keyEnd - keyStart;
    if (length > MAX_PATH_LENGTH) {
      problems.push({ code: 'mst-path', message: `entry ${i}: key of ${length} bytes is longer than ${MAX_PATH_LENGTH}` });
      return out;
    }
    for (let from = keyStart, to = prefix; from < keyEnd; ) keyBytes[to++] = bytes[from++]!;
    keyLength = length;
    // One char per byte: a valid path is ASCII, so string order is byte order; any other byte
    // becomes a char that the path check refuses.
    const key = latin1(keyBytes, 0, keyLength);
    const collection = collectionOf(key);
    if (collection === undefined) problems.push({ code: 'mst-path', message: 'key is not a valid collection/rkey path', key });
    if (last !== undefined && key <= last) problems.push({ code: 'mst-unsorted', message: `key does not sort after ${JSON.stringify(last)}`, key });
    // Keys that sort among themselves are all below `hi` when the last one is; ones that do not
    // are a problem already.
    if (hi !== undefined && i === count - 1 && key >= hi) problems.push({ code: 'mst-unsorted', message: `key does not sort before ${JSON.stringify(hi)}, the key after this subtree`, key });
    const keyLayerOf = keyLayer(keyBytes, keyLength);
    if (keyLayerOf !== layer) problems.push({ code: 'mst-layer', message: `key of layer ${keyLayerOf} is in a node of layer ${layer}`, key });
    if (entries[at + RIGHT]! >= 0 && layer === 0) problems.push(subtreeOnLayer0(bytes, entries[at + RIGHT]!));
    last = key;
    out.keys.push(key);
    out.collections.push(collection ?? '');
  }
  out.complete = true;
  return out;
}

/** The position of each subtree of a checked node, in key order: the left one, then each entry's right one. */
export function subtreePosition(node: CheckedMstNode, pos: MstPosition | undefined, entry: number): MstPosition {
  // Every field always present: positions of one shape keep the reads of them monomorphic.
  return {
    root: false,
    layer: node.layer > 0 ? node.layer - 1 : undefined,
    lo: entry < 0 ? pos?.lo : node.keys[entry],
    hi: entry < 0 ? (node.keys[0] ?? pos?.hi) : (node.keys[entry + 1] ?? pos?.hi),
  };
}

function subtreeOnLayer0(bytes: Uint8Array, at: number): MstProblem {
  return { code: 'mst-layer', message: `node of layer 0 has a subtree ${cidToString(bytes, at)}` };
}

/** The collection of `key` when it is a valid path, else undefined. */
function collectionOf(key: string): string | undefined {
  let slash = lastCollection.length;
  if (!(slash > 0 && key.charCodeAt(slash) === 0x2f && key.startsWith(lastCollection))) {
    slash = key.indexOf('/');
    if (slash <= 0) return undefined;
    const collection = key.slice(0, slash);
    if (!isNsid(collection)) return undefined;
    lastCollection = collection;
  }
  return isRecordKey(key.slice(slash + 1)) ? lastCollection : undefined;
}
