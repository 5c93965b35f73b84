/**
 * The references a record holds to things outside it: blobs (images, video) and strong refs to
 * other records. Blob mirroring fetches the first; the walker steps along both.
 *
 * Found by shape anywhere in the record, not by lexicon, so that records of collections this
 * project has never heard of are covered too.
 */
import { Buffer } from 'node:buffer';
import * as CBOR from '@atcute/cbor';
import { CidLinkWrapper } from '@atcute/cid';
import { isCid, parseCanonicalResourceUri } from '@atcute/lexicons/syntax';
import { RecordError } from './errors.ts';

export interface BlobRef {
  /** CID of the blob (raw codec for current blobs). */
  cid: string;
  mimeType: string | undefined;
  /** Size in bytes as the record states it; legacy refs have none. */
  size: number | undefined;
  /** The pre-2023 form `{ cid, mimeType }` rather than `{ $type: 'blob', ref, mimeType, size }`. */
  legacy: boolean;
}

/** A `{ uri, cid }` pointing at one version of a record, by DID. */
export interface StrongRef {
  uri: string;
  cid: string;
  did: string;
  collection: string;
  rkey: string;
}

export interface RecordRefs {
  blobs: BlobRef[];
  strongRefs: StrongRef[];
}

// A blob ref holds a CID link (tag 42: 0xd8 0x2a); a legacy blob and a strong ref hold a
// text key "cid" (0x63 "cid"). A record with neither holds no reference and is not decoded.
const CID_TAG = Buffer.from([0xd8, 0x2a]);
const CID_KEY = Buffer.from([0x63, 0x63, 0x69, 0x64]);

/**
 * Blob refs and strong refs in a record's DAG-CBOR bytes, in document order. Strong refs whose
 * URI is not a canonical record URI (`at://<did>/<collection>/<rkey>`) or whose CID is not a
 * CID are left out, as are blob-shaped objects without a valid CID.
 *
 * A record whose bytes hold neither a CID link nor a `cid` key cannot hold a reference and is
 * not decoded (most posts and profiles without images); for it only the leading map head is
 * checked, so this is not a validator of record contents.
 *
 * @throws RecordError the bytes are not a DAG-CBOR map
 */
export function extractRefs(bytes: Uint8Array): RecordRefs {
  const refs: RecordRefs = { blobs: [], strongRefs: [] };
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.indexOf(CID_TAG) < 0 && view.indexOf(CID_KEY) < 0) {
    if (bytes[0] === undefined || bytes[0] >> 5 !== 5) throw new RecordError('record is not a DAG-CBOR map');
    return refs;
  }
  let record: unknown;
  try {
    record = CBOR.decode(bytes);
  } catch (cause) {
    throw new RecordError(`record is not valid DAG-CBOR: ${(cause as Error).message}`, { cause });
  }
  if (!isMap(record)) throw new RecordError('record is not a DAG-CBOR map');

  // Iterative, depth-first in document order: a hostile record may nest deeply.
  const stack: unknown[] = [record];
  while (stack.length > 0) {
    const value = stack.pop();
    if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) stack.push(value[i]);
      continue;
    }
    if (!isMap(value)) continue;
    if (value.$type === 'blob') {
      if (value.ref instanceof CidLinkWrapper) {
        refs.blobs.push({
          cid: value.ref.$link,
          mimeType: typeof value.mimeType === 'string' ? value.mimeType : undefined,
          size: typeof value.size === 'number' ? value.size : undefined,
          legacy: false,
        });
      }
      continue;
    }
    if (typeof value.cid === 'string') {
      if (typeof value.mimeType === 'string' && value.$type === undefined) {
        if (isCid(value.cid)) refs.blobs.push({ cid: value.cid, mimeType: value.mimeType, size: undefined, legacy: true });
        continue;
      }
      if (typeof value.uri === 'string' && isCid(value.cid)) {
        const target = parseRecordUri(value.uri);
        if (target !== undefined) refs.strongRefs.push({ uri: value.uri, cid: value.cid, ...target });
      }
    }
    const values = Object.values(value);
    for (let i = values.length - 1; i >= 0; i--) {
      const child = values[i];
      if (typeof child === 'object' && child !== null) stack.push(child);
    }
  }
  return refs;
}

function isMap(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof CidLinkWrapper) && !(value instanceof CBOR.BytesWrapper);
}

function parseRecordUri(uri: string): { did: string; collection: string; rkey: string } | undefined {
  try {
    const { repo, collection, rkey } = parseCanonicalResourceUri(uri);
    return { did: repo, collection, rkey };
  } catch {
    return undefined;
  }
}
