/**
 * Two hashes of a node:
 *
 * - The identity hash (96 bits, three 32-bit lanes) the visited set stores. Seeded with a
 *   secret per process and mixing every byte of the key, so that nobody can mine two blocks
 *   whose identities collide (a collision would make the walk skip a node: for GC's mark walk,
 *   a live block left unmarked). Unseeded, 96 bits of a CID's digest could be matched with
 *   2^48 work.
 * - The sampling hash (48 bits), deterministic across processes and runs: a rotating scrub
 *   with rate R samples offset 0 today and offset 1 tomorrow, and the two must partition the
 *   same nodes. For block nodes it is the first 6 bytes of the CID's SHA-256 digest; for nodes
 *   keyed by text it is cyrb53 of the key. Hash sampling is not a security boundary.
 */
import { randomBytes } from 'node:crypto';
import { NODE_TYPE_INDEX } from './schema.ts';
import type { Node } from './nodes.ts';
import { nodeKey } from './nodes.ts';

const SEEDS = randomBytes(12);
const S0 = SEEDS.readInt32LE(0);
const S1 = SEEDS.readInt32LE(4);
const S2 = SEEDS.readInt32LE(8);

/** murmur3's 32-bit finalizer. */
function fmix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** One murmur3 round of `k` into `h`. */
function round(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  h ^= Math.imul(k, 0x1b873593);
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** The identity hash's lanes, written by `identityHash` (reused: no allocation per node). */
export const lanes = new Int32Array(3);

// The three lanes while a node is hashed (module state: hashing is synchronous).
let A = 0;
let B = 0;
let C = 0;
// The state after the type and DID of the last record row hashed.
let rowDid: string | undefined;
let rowA = 0;
let rowB = 0;
let rowC = 0;
// The identity of the last Pack node hashed: every block has an edge to its pack, and a walk
// steps a pack's blocks one after another.
let packKey: string | undefined;
let packA = 0;
let packB = 0;
let packC = 0;

function word(k: number): void {
  A = round(A, k);
  B = round(B, k ^ 0x5bd1e995);
  C = round(C, (k << 7) | (k >>> 25));
}

/** Two UTF-16 units per word, then the length as a terminator, so a sequence of strings is hashed injectively. */
function text(s: string): void {
  const n = s.length;
  let i = 0;
  for (; i + 1 < n; i += 2) word(s.charCodeAt(i) | (s.charCodeAt(i + 1) << 16));
  if (i < n) word(s.charCodeAt(i));
  word(n | 0x80000000);
}

/**
 * Writes the 96-bit identity of `node` (its type and key) into `lanes`. Lane 0 is never 0 (the
 * visited set's empty marker), which leaves 95 bits.
 */
export function identityHash(node: Node): void {
  const t = NODE_TYPE_INDEX[node.type];
  A = S0 ^ t;
  B = S1 ^ Math.imul(t, 0x9e3779b1);
  C = S2 ^ Math.imul(t, 0x85ebca77);
  switch (node.type) {
    case 'Commit':
    case 'MstNode':
    case 'Record':
    case 'Block': {
      const cid = node.cid;
      for (let i = 0; i + 3 < cid.length; i += 4) word(cid[i]! | (cid[i + 1]! << 8) | (cid[i + 2]! << 16) | (cid[i + 3]! << 24));
      for (let i = cid.length & ~3; i < cid.length; i++) word(cid[i]!);
      word(cid.length | 0x80000000);
      break;
    }
    case 'RecordRow':
      // The parts of `did/collection/rkey`, without building the string; a repo's rows share
      // their DID, whose part of the state is kept.
      if (node.did === rowDid) {
        A = rowA;
        B = rowB;
        C = rowC;
      } else {
        text(node.did);
        rowDid = node.did;
        rowA = A;
        rowB = B;
        rowC = C;
      }
      text(node.collection);
      text(node.rkey);
      break;
    case 'Pack':
      if (node.key === packKey) {
        lanes[0] = packA;
        lanes[1] = packB;
        lanes[2] = packC;
        return;
      }
      text(node.key);
      packKey = node.key;
      packA = lanes[0] = fmix(A) | 1;
      packB = lanes[1] = fmix(B);
      packC = lanes[2] = fmix(C);
      return;
    default:
      text(nodeKey(node));
  }
  lanes[0] = fmix(A) | 1;
  lanes[1] = fmix(B);
  lanes[2] = fmix(C);
}

/** The two 32-bit lanes `pathHash` writes (reused: no allocation per path). */
export const pair = new Int32Array(2);

/**
 * A seeded 64-bit hash of a record path alone, as two 32-bit lanes written to `pair`: the
 * index-vs-MST check finds a leaf's index row by it (equal hashes are taken as equal paths, as
 * equal sums of `pairHash` are taken as equal sets).
 */
export function pathHash(path: string): void {
  A = S0 ^ 0x3c6ef372;
  B = S1 ^ 0x510e527f;
  C = S2 ^ 0x1f83d9ab;
  text(path);
  pair[0] = fmix(A);
  pair[1] = fmix(B ^ C);
}

/** The deterministic 48-bit sampling hash of `node`. */
export function samplingHash(node: Node): number {
  switch (node.type) {
    case 'Commit':
    case 'MstNode':
    case 'Record':
    case 'Block': {
      // Bytes 4.. are the SHA-256 digest of the block: already uniform.
      const c = node.cid;
      return c[4]! * 2 ** 40 + c[5]! * 2 ** 32 + (((c[6]! << 24) | (c[7]! << 16) | (c[8]! << 8) | c[9]!) >>> 0);
    }
    default:
      return cyrb53(nodeKey(node)) % 2 ** 48;
  }
}

/** cyrb53 (public domain): a fast 53-bit string hash, stable across runs. */
export function cyrb53(str: string, seed = 0): number {
  let h1 = 0xdeadbeef ^ seed;
  let h2 = 0x41c6ce57 ^ seed;
  for (let i = 0; i < str.length; i++) {
    const ch = str.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}
