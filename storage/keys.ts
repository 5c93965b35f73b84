/**
 * Blobstore keys: how repowalk names what it stores, and how a reader checks bytes against
 * the name. Every key repowalk writes is derived from its content, so any copy can be verified
 * without a side table:
 *
 * - packs: `packs/<aa>/<sha256-hex-of-the-pack-bytes>.car`
 * - blobs: `blobs/<aa>/<cid-base32>` (CIDv1, raw or DAG-CBOR, SHA-256)
 *
 * `<aa>` is the first byte of the SHA-256 digest in hex: 256 fan-out directories keep local
 * directories and S3 listings small. (For blobs it comes from the digest, not the CID string,
 * whose first characters are always `ba`.)
 */
import { createHash } from 'node:crypto';
import { fromString as parseCid } from '@atcute/cid';
import { InvalidKeyError } from './errors.ts';

const MAX_KEY_LENGTH = 1024;
const SEGMENT = /^[A-Za-z0-9._,%=+-]+$/;
const PACK_KEY = /^packs\/([0-9a-f]{2})\/([0-9a-f]{64})\.car$/;
const BLOB_KEY = /^blobs\/([0-9a-f]{2})\/(b[a-z2-7]{58})$/;

function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** The key of a pack: the SHA-256 of its bytes. */
export function packKey(bytes: Uint8Array): string {
  return packKeyOfDigest(sha256Hex(bytes));
}

/** The key of a pack whose bytes' SHA-256 is `hex` (hashed a piece at a time by the caller). */
export function packKeyOfDigest(hex: string): string {
  return `packs/${hex.slice(0, 2)}/${hex}.car`;
}

/**
 * The key of a blob, from its CID string.
 * @throws {InvalidKeyError} when `cid` is not a base32 CIDv1 (raw or DAG-CBOR, SHA-256).
 */
export function blobKey(cid: string): string {
  let digest: Uint8Array;
  try {
    digest = parseCid(cid).digest.contents;
  } catch (err) {
    throw new InvalidKeyError(`blobs/?/${cid}`, `not a blob CID (${(err as Error).message})`);
  }
  return `blobs/${Buffer.from(digest.subarray(0, 1)).toString('hex')}/${cid}`;
}

/**
 * Checks that `key` is one the blobstore accepts: 1 to 1024 characters, `/`-separated
 * segments of `[A-Za-z0-9._,%=+-]`, no empty, `.` or `..` segment (so no leading or trailing
 * `/`). Such a key maps onto a file path under a root without escaping it.
 * @throws {InvalidKeyError} naming what is wrong.
 */
export function validateKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0) throw new InvalidKeyError(String(key), 'empty');
  if (key.length > MAX_KEY_LENGTH) throw new InvalidKeyError(key, `longer than ${MAX_KEY_LENGTH} characters`);
  if (key.startsWith('/')) throw new InvalidKeyError(key, 'leading /');
  for (const segment of key.split('/')) {
    if (segment === '') throw new InvalidKeyError(key, 'empty segment');
    if (segment === '.' || segment === '..') throw new InvalidKeyError(key, `segment ${segment}`);
    if (!SEGMENT.test(segment)) throw new InvalidKeyError(key, 'characters outside [A-Za-z0-9._,%=+-]');
  }
}

/**
 * Checks a listing prefix: empty, or the start of a valid key (it may end in `/` or in the
 * middle of a segment).
 * @throws {InvalidKeyError}
 */
export function validatePrefix(prefix: string): void {
  if (prefix === '') return;
  // A prefix is a key with an optional trailing `/`.
  validateKey(prefix.endsWith('/') ? prefix.slice(0, -1) : prefix);
}

export type ContentCheck = { ok: true; unchecked?: true } | { ok: false; reason: string };

/**
 * Whether `bytes` are the content `key` names. Pack and blob keys are checked by SHA-256;
 * keys of any other shape carry no hash and come back `{ ok: true, unchecked: true }`.
 */
export function verifyContent(key: string, bytes: Uint8Array): ContentCheck {
  const pack = PACK_KEY.exec(key);
  if (pack) {
    const [, fanout, expected] = pack;
    if (fanout !== expected?.slice(0, 2)) return { ok: false, reason: 'fan-out directory does not match the hash' };
    const actual = sha256Hex(bytes);
    return actual === expected ? { ok: true } : { ok: false, reason: `sha-256 is ${actual}` };
  }
  const blob = BLOB_KEY.exec(key);
  if (blob) {
    const [, fanout, cid = ''] = blob;
    let expected: string;
    try {
      expected = Buffer.from(parseCid(cid).digest.contents).toString('hex');
    } catch (err) {
      return { ok: false, reason: `not a blob CID (${(err as Error).message})` };
    }
    if (fanout !== expected.slice(0, 2)) return { ok: false, reason: 'fan-out directory does not match the CID' };
    const actual = sha256Hex(bytes);
    return actual === expected ? { ok: true } : { ok: false, reason: `sha-256 is ${actual}, the CID names ${expected}` };
  }
  return { ok: true, unchecked: true };
}
