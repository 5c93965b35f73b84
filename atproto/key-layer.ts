/**
 * The MST layer of a key: the leading zero bits of SHA-256(key), counted in pairs (fanout 4),
 * as the atproto repository spec defines it.
 *
 * Every key of a repo needs it, and keys are short (a 13-character TID under a collection
 * name: about 35 bytes), so they fit one SHA-256 block. For those a JavaScript compression is
 * about three times faster than a call into `node:crypto`, whose fixed cost per call dominates
 * at this size. Longer keys, and the one-in-four-billion key whose first 32 bits are all zero,
 * take the native path.
 */
import { hash } from 'node:crypto';

/** Layer of the key held in `bytes[0..length]`. */
export function keyLayer(bytes: Uint8Array, length: number): number {
  if (length <= 55) {
    const zeros = Math.clz32(firstWord(bytes, length));
    if (zeros < 32) return zeros >>> 1;
  }
  return layerOfDigest(hash('sha256', bytes.subarray(0, length), 'buffer'));
}

/** Layer from a full digest (the reference computation, also used to test the fast path). */
export function layerOfDigest(digest: Uint8Array): number {
  let zeros = 0;
  for (let i = 0; i < digest.length; i++) {
    const byte = digest[i]!;
    if (byte === 0) {
      zeros += 8;
      continue;
    }
    zeros += Math.clz32(byte) - 24;
    break;
  }
  return zeros >>> 1;
}

const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
  0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
  0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
  0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
  0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
  0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const W = new Int32Array(64);
const H0 = 0x6a09e667;

/** First 32 bits of SHA-256 of a message of at most 55 bytes (one padded block). */
function firstWord(bytes: Uint8Array, length: number): number {
  const w = W;
  w.fill(0, 0, 16);
  for (let i = 0; i < length; i++) w[i >> 2]! |= bytes[i]! << (24 - 8 * (i & 3));
  w[length >> 2]! |= 0x80 << (24 - 8 * (length & 3));
  w[15] = length * 8;
  for (let i = 16; i < 64; i++) {
    const w15 = w[i - 15]!;
    const w2 = w[i - 2]!;
    const s0 = ((w15 >>> 7) | (w15 << 25)) ^ ((w15 >>> 18) | (w15 << 14)) ^ (w15 >>> 3);
    const s1 = ((w2 >>> 17) | (w2 << 15)) ^ ((w2 >>> 19) | (w2 << 13)) ^ (w2 >>> 10);
    w[i] = (w[i - 16]! + s0 + w[i - 7]! + s1) | 0;
  }
  let a = H0 | 0;
  let b = 0xbb67ae85 | 0;
  let c = 0x3c6ef372 | 0;
  let d = 0xa54ff53a | 0;
  let e = 0x510e527f | 0;
  let f = 0x9b05688c | 0;
  let g = 0x1f83d9ab | 0;
  let h = 0x5be0cd19 | 0;
  for (let i = 0; i < 64; i++) {
    const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (h + s1 + ((e & f) ^ (~e & g)) + K[i]! + w[i]!) | 0;
    const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  return (a + H0) | 0;
}
