/**
 * Commit signatures, for every path that checks one (backfill's verify, live sync, refresh,
 * the validate walk): secp256k1 or P-256, as a `did:key:` or a bare multikey, low-S only (the
 * reference implementation refuses high-S), with each key parsed once and kept.
 *
 * secp256k1 — the curve nearly every PDS signs with — is checked with libsecp256k1 when the
 * `secp256k1` package's native binding (a prebuilt N-API addon) is installed: about 65 µs of
 * CPU a verify on this machine, against about 650 µs for OpenSSL's generic code for that curve,
 * which is otherwise used. That was most of live sync's CPU per event, and of a small repo's
 * import and validation. Only the native binding is
 * taken: the package's own fallback is a JavaScript implementation slower than OpenSSL. P-256 is
 * OpenSSL's (its optimised curve code, about 150 µs).
 */
import { createPublicKey, hash, verify, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import { type FoundPublicKey, parseDidKey, parsePublicMultikey, verifySig } from '@atcute/crypto';
import type { Commit } from './commit.ts';
import { SignatureError } from './errors.ts';

// DER SubjectPublicKeyInfo up to the compressed point: id-ecPublicKey with the curve's OID.
const SPKI = {
  secp256k1: Buffer.from('3036301006072a8648ce3d020106052b8104000a032200', 'hex'),
  p256: Buffer.from('3039301306072a8648ce3d020106082a8648ce3d030107032200', 'hex'),
};
// Half the curve's order, big-endian: a signature's s above it is the high-S twin of another.
const HALF_N = {
  secp256k1: Buffer.from('7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0', 'hex'),
  p256: Buffer.from('7fffffff800000007fffffffffffffffde737d56d38bcf4279dce5617e3192a8', 'hex'),
};

/** Whether the s of the 64-byte signature `sig` (its last 32 bytes, big-endian) is at most `halfN`. */
function lowS(sig: Uint8Array, halfN: Uint8Array): boolean {
  for (let i = 0; i < 32; i++) {
    const a = sig[32 + i]!;
    const b = halfN[i]!;
    if (a !== b) return a < b;
  }
  return true;
}

interface Libsecp256k1 {
  ecdsaVerify(sig: Uint8Array, msg32: Uint8Array, publicKey: Uint8Array): boolean;
  publicKeyConvert(publicKey: Uint8Array, compressed: boolean): Uint8Array;
}

function loadLibsecp256k1(): Libsecp256k1 | undefined {
  try {
    return createRequire(import.meta.url)('secp256k1/bindings.js') as Libsecp256k1;
  } catch {
    return undefined;
  }
}
const libsecp256k1 = loadLibsecp256k1();

export type SignatureBackend = 'libsecp256k1' | 'openssl';

/** What checks secp256k1 signatures in this process (shown by the bench and the worker's log). */
export const secp256k1Backend: SignatureBackend = libsecp256k1 ? 'libsecp256k1' : 'openssl';

interface ParsedKey {
  type: 'secp256k1' | 'p256';
  /** The compressed point. */
  point: Uint8Array;
  /**
   * OpenSSL's key, made when first needed: libsecp256k1 takes the point as it is, and making a
   * KeyObject (decompressing the point) cost about 110 µs, more than the verify, for every repo
   * whose key was not seen before — on the network, nearly every one.
   */
  key: KeyObject | undefined;
  /**
   * For libsecp256k1, the same point uncompressed: parsing a compressed key takes a square root,
   * about 8 of a verify's 65 µs, on every verify. A key used once (`DecodedSigningKey`) keeps it compressed.
   */
  full: Uint8Array;
  halfN: Uint8Array;
}
const keys = new Map<string, ParsedKey>();

/**
 * A signing key already decoded, as the DID document's reader (atproto/net/did-document.ts)
 * gives it: its `did:key:` form and its compressed point. Verifying with it decodes nothing
 * again, and keeps nothing: a backfill meets each repo's key once.
 */
export interface DecodedSigningKey {
  /** The key as `did:key:z…` (for messages, and to find it among the keys already parsed). */
  didKey: string;
  type: 'secp256k1' | 'p256';
  /** The 33-byte compressed point `didKey` encodes. */
  point: Uint8Array;
}

function keyFor(signingKey: string | DecodedSigningKey): ParsedKey | undefined {
  if (typeof signingKey !== 'string') return decodedKey(signingKey);
  let k = keys.get(signingKey);
  if (k) return k;
  let found;
  try {
    found = signingKey.startsWith('did:key:') ? parseDidKey(signingKey) : parsePublicMultikey(signingKey);
  } catch {
    return undefined; // the general path names the problem
  }
  if (found.publicKeyBytes.length !== 33) return undefined;
  let full: Uint8Array = found.publicKeyBytes;
  if (found.type === 'secp256k1' && libsecp256k1) {
    try {
      full = libsecp256k1.publicKeyConvert(found.publicKeyBytes, false);
    } catch {
      return undefined; // not a point on the curve: the general path names it
    }
  }
  k = { type: found.type, point: found.publicKeyBytes, full, key: undefined, halfN: HALF_N[found.type] };
  if (!(k.type === 'secp256k1' && libsecp256k1) && keyObjectOf(k) === undefined) return undefined; // not a point on the curve: the general path names it
  if (keys.size > 100_000) keys.clear();
  keys.set(signingKey, k);
  return k;
}

/** OpenSSL's keys made from decoded points, by did:key (a hit counts only when its point is the one given). */
const decodedKeys = new Map<string, ParsedKey>();

/**
 * A decoded key's parsed form, decoding nothing: its point is what is checked. libsecp256k1
 * takes the compressed point as it is, and such a key is used once and not kept: to uncompress
 * it first (what a kept key saves on its later verifies) costs more than the verify's own parse
 * of it. A point that is not on the curve fails the verify, and the general path then names it.
 * OpenSSL's key (P-256, or no libsecp256k1) is made from the point and kept: it is costly to make.
 */
function decodedKey(d: DecodedSigningKey): ParsedKey | undefined {
  if (d.point.length !== 33 || (d.point[0] !== 0x02 && d.point[0] !== 0x03)) return undefined;
  if (d.type === 'secp256k1' && libsecp256k1) return { type: d.type, point: d.point, full: d.point, key: undefined, halfN: HALF_N.secp256k1 };
  const hit = decodedKeys.get(d.didKey);
  if (hit !== undefined && Buffer.compare(hit.point, d.point) === 0) return hit;
  const k: ParsedKey = { type: d.type, point: d.point, full: d.point, key: undefined, halfN: HALF_N[d.type] };
  if (keyObjectOf(k) === undefined) return undefined; // not a point on the curve: the general path names it
  if (decodedKeys.size > 10_000) decodedKeys.clear();
  decodedKeys.set(d.didKey, k);
  return k;
}

/**
 * Checks the commit's signature with the repo's atproto signing key: a `did:key:` or bare
 * multikey (parsed once and kept), or a key the DID document's reader decoded already.
 *
 * @param backend for tests: which code checks a secp256k1 signature (libsecp256k1 only when
 *   installed)
 * @throws SignatureError the key cannot be parsed (`signing-key-invalid`) or the signature does
 *   not verify (`signature-invalid`)
 */
export async function verifyCommitSignature(commit: Commit, commitCid: string, key: string | DecodedSigningKey, backend: SignatureBackend = secp256k1Backend): Promise<void> {
  const signingKey = typeof key === 'string' ? key : key.didKey;
  const k = keyFor(key);
  if (!k) return verifyGeneral(commit, commitCid, signingKey);
  const sig = commit.sig;
  let valid = sig.length === 64 && lowS(sig, k.halfN);
  if (valid) {
    try {
      if (k.type === 'secp256k1' && backend === 'libsecp256k1' && libsecp256k1) {
        valid = libsecp256k1.ecdsaVerify(sig, digestOf(commit.unsigned), k.full);
      } else {
        const keyObject = keyObjectOf(k);
        if (keyObject === undefined) return verifyGeneral(commit, commitCid, signingKey);
        valid = verify('sha256', commit.unsigned, { key: keyObject, dsaEncoding: 'ieee-p1363' }, sig);
      }
    } catch {
      // A point libsecp256k1 cannot parse is not on the curve: the general path names it, as
      // when OpenSSL refused it up front.
      if (keyObjectOf(k) === undefined) return verifyGeneral(commit, commitCid, signingKey);
      valid = false;
    }
  }
  if (!valid) throw new SignatureError('signature-invalid', `commit ${commitCid}: signature does not verify with ${k.type} key ${signingKey}`);
}

// The digest a signature is checked over, written here: hashing to a one-byte string and copying
// it costs half of hashing to a new Buffer.
const digest32 = new Uint8Array(32);
function digestOf(bytes: Uint8Array): Uint8Array {
  const digest = hash('sha256', bytes, 'binary');
  for (let i = 0; i < 32; i++) digest32[i] = digest.charCodeAt(i);
  return digest32;
}

/** `k`'s OpenSSL key, made once; undefined when the point is not on the curve. */
function keyObjectOf(k: ParsedKey): KeyObject | undefined {
  if (k.key === undefined) {
    try {
      k.key = createPublicKey({ key: Buffer.concat([SPKI[k.type], k.point]), format: 'der', type: 'spki' });
    } catch {
      return undefined;
    }
  }
  return k.key;
}

/** A key the fast path cannot take (a malformed one, an uncompressed point): names the problem. */
async function verifyGeneral(commit: Commit, commitCid: string, signingKey: string): Promise<void> {
  const key = parseSigningKey(signingKey);
  let valid: boolean;
  try {
    valid = await verifySig(key, commit.sig as Uint8Array<ArrayBuffer>, commit.unsigned as Uint8Array<ArrayBuffer>);
  } catch {
    valid = false;
  }
  if (!valid) {
    throw new SignatureError('signature-invalid', `commit ${commitCid}: signature does not verify with ${key.type} key ${signingKey}`);
  }
}

function parseSigningKey(signingKey: string): FoundPublicKey {
  try {
    return signingKey.startsWith('did:key:') ? parseDidKey(signingKey) : parsePublicMultikey(signingKey);
  } catch (cause) {
    throw new SignatureError('signing-key-invalid', `signing key ${JSON.stringify(signingKey)} is not a secp256k1 or P-256 key: ${(cause as Error).message}`, {
      cause,
    });
  }
}
