/**
 * The sync v1.1 proof of a commit: its ops, inverted on the partial new tree a firehose frame
 * carries, must give the previous data root. Only the nodes on the ops' paths are read (each
 * decoded once, in place: `mst-node.ts`) and only the nodes the inversion changes are encoded and
 * hashed, once, at the end: a generic MST library re-encodes and hashes every node it touches
 * after every op, and hashes every key of every node it reads with a call into `node:crypto`.
 *
 * The tree operations are those of the reference implementations (atproto's MST, `@atcute/mst`'s
 * `NodeWrangler`): put splits the subtree at the key's place, delete merges the subtrees on both
 * sides of the key, the tree grows with empty nodes above a higher key and loses its empty top
 * nodes after a delete. A node read is checked as the reference decoder checks it (keys valid,
 * ascending, maximally prefix-compressed, all on one layer) and, beyond that, against its place:
 * on the layer below its parent's, and never empty below the root. Each op must also agree with
 * the tree: a create's or update's key holds the op's CID in the new tree, a delete's key is not
 * in it.
 */
import { hash } from 'node:crypto';
import { CID_LENGTH, cidToString, equalCid, latin1 } from './cid.ts';
import { keyLayer } from './key-layer.ts';
import { ENTRY_FIELDS, KEY_END, KEY_START, MstNodeFormatError, PREFIX, RIGHT, VALUE, decodeMstNode } from './mst-node.ts';
import { MAX_PATH_LENGTH } from './mst-check.ts';

/** Where to find a tree's blocks by CID bytes (a `BlockMap` is one). */
export interface NodeSource {
  indexOf(cid: Uint8Array, offset?: number): number;
  dataAt(index: number): Uint8Array;
}

export interface ProofOp {
  action: 'create' | 'update' | 'delete';
  /** `collection/rkey`. */
  path: string;
  /** The record's CID after the op (create, update), as 36 bytes. */
  cid: Uint8Array | null;
  /** Its CID before (update, delete). */
  prev: Uint8Array | null;
}

export type MstProofProblem = 'missing-block' | 'malformed-node' | 'op-mismatch';

/** Why the ops could not be inverted on the tree given. */
export class MstProofError extends Error {
  override name = 'MstProofError';
  readonly problem: MstProofProblem;
  constructor(problem: MstProofProblem, message: string) {
    super(message);
    this.problem = problem;
  }
}

/** A node read or made: keys in full, values and read subtrees as 36-byte CID views. */
interface Node {
  keys: string[];
  values: Uint8Array[];
  /** `keys.length + 1` subtrees: a node, a CID not read (unchanged), or none. */
  subs: (Node | Uint8Array | null)[];
  /** The CID the node was read under; null once it changed (or when it is new). */
  cid: Uint8Array | null;
}

// Entries of the node being read: each is copied out before the next is read.
let scratch: Int32Array = new Int32Array(64 * ENTRY_FIELDS);

const EMPTY = (): Node => ({ keys: [], values: [], subs: [null], cid: null });
const isEmpty = (n: Node) => n.keys.length === 0 && n.subs[0] === null;

/**
 * Inverts `ops` (in reverse order) on the tree whose root node's CID is `root` and returns the
 * CID bytes of the tree's root after them.
 *
 * @throws MstProofError a node the inversion needs is not in `blocks` (`missing-block`), a node
 *   read is not a valid MST node in its place (`malformed-node`), an op disagrees with the tree
 *   (`op-mismatch`)
 */
export function invertOps(blocks: NodeSource, root: Uint8Array, ops: ProofOp[]): Uint8Array {
  const t = new Inversion(blocks);
  let top = t.load(root, undefined);
  for (let i = ops.length - 1; i >= 0; i--) {
    const op = ops[i]!;
    const key = op.path;
    if (!validKey(key)) throw new MstProofError('op-mismatch', `op path ${JSON.stringify(key)} is not a valid MST key`);
    if (op.action === 'create') {
      const removed = t.remove(top, key);
      if (removed.value === null) throw new MstProofError('op-mismatch', `create ${key}: the key is not in the new tree`);
      if (op.cid === null || !equalCid(removed.value, op.cid)) throw new MstProofError('op-mismatch', `create ${key}: the new tree holds another CID for it`);
      top = removed.root;
    } else {
      if (op.prev === null) throw new MstProofError('op-mismatch', `${op.action} ${key} carries no prev`);
      const put = t.put(top, key, op.prev);
      if (op.action === 'update' && (put.old === null || op.cid === null || !equalCid(put.old, op.cid))) {
        throw new MstProofError('op-mismatch', `update ${key}: the new tree ${put.old === null ? 'lacks the key' : 'holds another CID for it'}`);
      }
      if (op.action === 'delete' && put.old !== null) throw new MstProofError('op-mismatch', `delete ${key}: the key is still in the new tree`);
      top = put.root;
    }
  }
  return t.cidOf(top);
}

class Inversion {
  readonly #blocks: NodeSource;
  constructor(blocks: NodeSource) {
    this.#blocks = blocks;
  }

  /** Reads the node `cid`, which must sit on `layer` (undefined for the root). */
  load(cid: Uint8Array, layer: number | undefined): Node {
    const index = this.#blocks.indexOf(cid);
    if (index < 0) throw new MstProofError('missing-block', `MST node ${cidToString(cid, 0)} is not in the frame`);
    const bytes = this.#blocks.dataAt(index);
    let decoded;
    try {
      decoded = decodeMstNode(bytes, scratch);
      scratch = decoded.entries;
    } catch (err) {
      if (!(err instanceof MstNodeFormatError)) throw err;
      throw new MstProofError('malformed-node', `MST node ${cidToString(cid, 0)}: ${err.message}`);
    }
    const { count, entries } = decoded;
    const bad = (why: string) => new MstProofError('malformed-node', `MST node ${cidToString(cid, 0)}: ${why}`);
    const keys: string[] = new Array(count);
    const values: Uint8Array[] = new Array(count);
    const subs: (Node | Uint8Array | null)[] = new Array(count + 1);
    subs[0] = decoded.left < 0 ? null : bytes.subarray(decoded.left, decoded.left + CID_LENGTH);
    let prev = '';
    let nodeLayer = -1;
    for (let i = 0; i < count; i++) {
      const at = i * ENTRY_FIELDS;
      const prefix = entries[at + PREFIX]!;
      const start = entries[at + KEY_START]!;
      const end = entries[at + KEY_END]!;
      if (prefix > prev.length) throw bad(`entry ${i}: prefix length ${prefix} is longer than the previous key`);
      if (end > start && prefix < prev.length && prev.charCodeAt(prefix) === bytes[start]) throw bad(`entry ${i}: prefix length ${prefix} is shorter than the shared prefix`);
      const key = prev.slice(0, prefix) + latin1(bytes, start, end);
      if (key <= prev) throw bad(`entry ${i}: key does not sort after the one before`);
      if (!validKey(key)) throw bad(`entry ${i}: key ${JSON.stringify(key.slice(0, 200))} is not a valid MST key`);
      const l = layerOf(key);
      if (i === 0) nodeLayer = l;
      else if (l !== nodeLayer) throw bad(`entry ${i}: key of layer ${l} in a node of layer ${nodeLayer}`);
      keys[i] = key;
      const value = entries[at + VALUE]!;
      values[i] = bytes.subarray(value, value + CID_LENGTH);
      const right = entries[at + RIGHT]!;
      subs[i + 1] = right < 0 ? null : bytes.subarray(right, right + CID_LENGTH);
      prev = key;
    }
    if (layer === undefined) {
      if (count > 0 && nodeLayer === 0 && subs.some((s) => s !== null)) throw bad('a node of layer 0 with a subtree');
    } else {
      if (layer < 0) throw bad('a subtree below layer 0');
      if (count > 0 && nodeLayer !== layer) throw bad(`a node of layer ${nodeLayer} where its parent puts layer ${layer}`);
      if (count === 0 && subs[0] === null) throw bad('an empty node below the root');
      if (layer === 0 && subs.some((s) => s !== null)) throw bad('a node of layer 0 with a subtree');
    }
    // The CID bytes are a view of bytes never written to (the frame, or the caller's).
    return { keys, values, subs, cid };
  }

  /** The subtree `ref` (on `layer`) as a node, read if it was not; an empty node for none. */
  #node(ref: Node | Uint8Array | null, layer: number): Node {
    if (ref === null) return EMPTY();
    if (ref instanceof Uint8Array) return this.load(ref, layer);
    return ref;
  }

  /** The layer of a root: its first key's; 0 for the empty tree. */
  #height(root: Node): number {
    if (root.keys.length > 0) return layerOf(root.keys[0]!);
    if (root.subs[0] === null) return 0;
    throw new MstProofError('malformed-node', 'the root has no keys, only a subtree: its height is indeterminate');
  }

  put(root: Node, key: string, value: Uint8Array): { root: Node; old: Uint8Array | null } {
    const out = { old: null as Uint8Array | null };
    if (isEmpty(root)) return { root: this.#putHere(root, key, value, 0, out), old: out.old };
    return { root: this.#putAt(root, key, value, layerOf(key), this.#height(root), out), old: out.old };
  }

  #putAt(node: Node, key: string, value: Uint8Array, keyLayer: number, layer: number, out: { old: Uint8Array | null }): Node {
    if (keyLayer > layer) {
      // The tree grows: an empty node above the old root, and the key goes in one layer up.
      return this.#putAt({ keys: [], values: [], subs: [node], cid: null }, key, value, keyLayer, layer + 1, out);
    }
    if (keyLayer < layer) {
      const i = lowerBound(node.keys, key);
      node.subs[i] = this.#putAt(this.#node(node.subs[i]!, layer - 1), key, value, keyLayer, layer - 1, out);
      node.cid = null;
      return node;
    }
    return this.#putHere(node, key, value, layer, out);
  }

  #putHere(node: Node, key: string, value: Uint8Array, layer: number, out: { old: Uint8Array | null }): Node {
    const i = lowerBound(node.keys, key);
    if (i < node.keys.length && node.keys[i] === key) {
      out.old = node.values[i]!;
      if (!equalCid(node.values[i]!, value)) {
        node.values[i] = value;
        node.cid = null;
      }
      return node;
    }
    const [left, right] = this.#split(node.subs[i]!, key, layer - 1);
    node.keys.splice(i, 0, key);
    node.values.splice(i, 0, value);
    node.subs.splice(i, 1, left, right);
    node.cid = null;
    return node;
  }

  /** Splits the subtree `ref` (on `layer`) around `key`: the part below it and the part above. */
  #split(ref: Node | Uint8Array | null, key: string, layer: number): [Node | null, Node | null] {
    if (ref === null) return [null, null];
    const node = this.#node(ref, layer);
    const i = lowerBound(node.keys, key);
    const [l, r] = this.#split(node.subs[i]!, key, layer - 1);
    const left: Node = { keys: node.keys.slice(0, i), values: node.values.slice(0, i), subs: [...node.subs.slice(0, i), l], cid: null };
    const right: Node = { keys: node.keys.slice(i), values: node.values.slice(i), subs: [r, ...node.subs.slice(i + 1)], cid: null };
    return [isEmpty(left) ? null : left, isEmpty(right) ? null : right];
  }

  remove(root: Node, key: string): { root: Node; value: Uint8Array | null } {
    const out = { value: null as Uint8Array | null };
    const height = this.#height(root);
    let top = this.#removeAt(root, key, layerOf(key), height, out);
    // The tree loses its empty top nodes.
    let layer = height;
    while (top !== null && top.keys.length === 0 && top.subs[0] !== null) top = this.#node(top.subs[0]!, --layer);
    return { root: top ?? EMPTY(), value: out.value };
  }

  #removeAt(node: Node, key: string, keyLayer: number, layer: number, out: { value: Uint8Array | null }): Node | null {
    if (keyLayer > layer) return isEmpty(node) ? null : node;
    const i = lowerBound(node.keys, key);
    if (keyLayer < layer) {
      const sub = node.subs[i]!;
      if (sub === null) return isEmpty(node) ? null : node;
      node.subs[i] = this.#removeAt(this.#node(sub, layer - 1), key, keyLayer, layer - 1, out);
      node.cid = null;
      return isEmpty(node) ? null : node;
    }
    if (i === node.keys.length || node.keys[i] !== key) return isEmpty(node) ? null : node;
    out.value = node.values[i]!;
    const merged = this.#merge(node.subs[i]!, node.subs[i + 1]!, layer - 1);
    node.keys.splice(i, 1);
    node.values.splice(i, 1);
    node.subs.splice(i, 2, merged);
    node.cid = null;
    return isEmpty(node) ? null : node;
  }

  /** Merges two adjacent subtrees on `layer`. */
  #merge(a: Node | Uint8Array | null, b: Node | Uint8Array | null, layer: number): Node | Uint8Array | null {
    if (a === null) return b;
    if (b === null) return a;
    const left = this.#node(a, layer);
    const right = this.#node(b, layer);
    const boundary = this.#merge(left.subs[left.subs.length - 1] ?? null, right.subs[0] ?? null, layer - 1);
    const node: Node = {
      keys: [...left.keys, ...right.keys],
      values: [...left.values, ...right.values],
      subs: [...left.subs.slice(0, -1), boundary, ...right.subs.slice(1)],
      cid: null,
    };
    return isEmpty(node) ? null : node;
  }

  /** The CID of `node`, encoding and hashing it (and its changed subtrees) when it changed. */
  cidOf(node: Node): Uint8Array {
    if (node.cid !== null) return node.cid;
    const subs: (Uint8Array | null)[] = node.subs.map((s) => (s === null ? null : s instanceof Uint8Array ? s : this.cidOf(s)));
    const cid = new Uint8Array(CID_LENGTH);
    cid[0] = 0x01;
    cid[1] = 0x71;
    cid[2] = 0x12;
    cid[3] = 0x20;
    // The digest as a one-byte string: a Buffer per digest costs twice the hash of a node.
    const digest = hash('sha256', encodeNode(node.keys, node.values, subs), 'binary');
    for (let i = 0; i < 32; i++) cid[4 + i] = digest.charCodeAt(i);
    node.cid = cid;
    return cid;
  }
}

// The node being encoded (a view of it is hashed before the next one is encoded).
let out = new Uint8Array(4096);
let pos = 0;

/**
 * A node's canonical DAG-CBOR: `{ e: [{ k, p, t, v }], l }`, keys prefix-compressed against the
 * key before them in the node (the layout `decodeMstNode` reads). The bytes are a view of a
 * buffer the next call reuses.
 */
export function encodeNode(keys: string[], values: Uint8Array[], subs: (Uint8Array | null)[]): Uint8Array {
  let size = 4 + 5 + 42;
  for (const k of keys) size += 1 + 2 + 5 + k.length + 2 + 5 + 2 + 42 + 2 + 42;
  if (size > out.length) out = new Uint8Array(size * 2);
  pos = 0;
  out[pos++] = 0xa2;
  field(0x65 /* e */);
  head(4, keys.length);
  let prev = '';
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    let prefix = 0;
    const max = Math.min(prev.length, key.length);
    while (prefix < max && prev.charCodeAt(prefix) === key.charCodeAt(prefix)) prefix++;
    out[pos++] = 0xa4;
    field(0x6b /* k */);
    head(2, key.length - prefix);
    for (let c = prefix; c < key.length; c++) out[pos++] = key.charCodeAt(c);
    field(0x70 /* p */);
    head(0, prefix);
    field(0x74 /* t */);
    link(subs[i + 1]!);
    field(0x76 /* v */);
    link(values[i]!);
    prev = key;
  }
  field(0x6c /* l */);
  link(subs[0]!);
  return out.subarray(0, pos);
}

function head(major: number, n: number): void {
  if (n < 24) out[pos++] = (major << 5) | n;
  else if (n < 0x100) {
    out[pos++] = (major << 5) | 24;
    out[pos++] = n;
  } else if (n < 0x10000) {
    out[pos++] = (major << 5) | 25;
    out[pos++] = n >> 8;
    out[pos++] = n & 0xff;
  } else {
    out[pos++] = (major << 5) | 26;
    out[pos++] = n >>> 24;
    out[pos++] = (n >> 16) & 0xff;
    out[pos++] = (n >> 8) & 0xff;
    out[pos++] = n & 0xff;
  }
}

function field(letter: number): void {
  out[pos++] = 0x61;
  out[pos++] = letter;
}

function link(cid: Uint8Array | null): void {
  if (cid === null) {
    out[pos++] = 0xf6;
    return;
  }
  out[pos++] = 0xd8;
  out[pos++] = 0x2a;
  out[pos++] = 0x58;
  out[pos++] = CID_LENGTH + 1;
  out[pos++] = 0;
  for (let i = 0; i < CID_LENGTH; i++) out[pos + i] = cid[i]!;
  pos += CID_LENGTH;
}

function lowerBound(keys: string[], key: string): number {
  let i = 0;
  while (i < keys.length && keys[i]! < key) i++;
  return i;
}

// Key bytes for the layer hash: keys are ASCII (checked first), one byte per char.
const keyBuf = new Uint8Array(MAX_PATH_LENGTH);
// A key's layer never changes, and a repo's commits read the same keys again and again (every
// key of every node read is hashed): remembered, up to 50,000 keys (a few MB).
const layers = new Map<string, number>();
function layerOf(key: string): number {
  let layer = layers.get(key);
  if (layer !== undefined) return layer;
  for (let i = 0; i < key.length; i++) keyBuf[i] = key.charCodeAt(i);
  layer = keyLayer(keyBuf, key.length);
  if (layers.size >= 50_000) layers.clear();
  layers.set(key, layer);
  return layer;
}

/** The reference's MST key rule: `[a-zA-Z0-9_~.:-]+/[a-zA-Z0-9_~.:-]+`, at most 1024 bytes. */
function validKey(key: string): boolean {
  if (key.length > MAX_PATH_LENGTH || key.length < 3) return false;
  let slash = -1;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c === 0x2f) {
      if (slash >= 0 || i === 0) return false;
      slash = i;
    } else if (!KEY_CHAR[c]) return false;
  }
  return slash > 0 && slash < key.length - 1;
}
const KEY_CHAR = new Uint8Array(128);
for (const c of 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_~.:-') KEY_CHAR[c.charCodeAt(0)] = 1;
