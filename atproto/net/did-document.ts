/**
 * Reads what backfill needs out of a DID document — the PDS endpoint, the handle and the atproto
 * signing key — and explains, in the error, exactly what is missing or wrong and where.
 */
import { type FoundPublicKey, getPublicKeyFromDidController } from '@atcute/crypto';
import { isHandle } from '@atcute/lexicons/syntax';
import { toBase58Btc } from '@atcute/multibase';
import { z } from 'zod';
import { IdentityError } from './errors.ts';

const verificationMethodSchema = z.looseObject({
  id: z.string(),
  type: z.string(),
  controller: z.string().optional(),
  publicKeyMultibase: z.string().optional(),
});
const serviceSchema = z.looseObject({
  id: z.string(),
  type: z.union([z.string(), z.array(z.string())]),
  serviceEndpoint: z.unknown(),
});
const didDocumentSchema = z.looseObject({
  id: z.string(),
  alsoKnownAs: z.array(z.string()).optional(),
  verificationMethod: z.array(verificationMethodSchema).optional(),
  service: z.array(serviceSchema).optional(),
});
export type DidDocument = z.infer<typeof didDocumentSchema>;

export interface AtprotoIdentity {
  did: string;
  /** Origin of the `#atproto_pds` service endpoint, without a trailing slash. */
  pds: string;
  /**
   * The first valid `at://` handle of `alsoKnownAs`, lower-cased. `resolveDid` verifies it
   * against the DID and replaces it with `handle.invalid` when it does not point back.
   */
  handle: string | undefined;
  /** Whether `handle` was checked and points back at the DID; absent when not checked. */
  handleVerified?: boolean;
  /** The document's claim, when it did not verify (`handle` is then `handle.invalid`). */
  claimedHandle?: string;
  /** The `#atproto` key as `did:key:z…` (what `verifyRepo` takes). */
  signingKey: string;
  /** The same key as a bare multikey (`z…`, multicodec-prefixed compressed key, base58btc). */
  signingMultikey: string;
  signingKeyType: FoundPublicKey['type'];
  /**
   * The same key's compressed point (33 bytes), decoded here once: verifying the repo's commit
   * takes it as it is (`DecodedSigningKey`) rather than decoding `signingKey` again.
   */
  signingKeyPoint: Uint8Array;
}

// Multicodec varints of the public key types atproto allows.
const MULTICODEC = { p256: [0x80, 0x24], secp256k1: [0xe7, 0x01] } as const;

/**
 * Validates `json` as the DID document of `did` and extracts the atproto data.
 * `source` (the URL it came from) goes into every message.
 *
 * @throws IdentityError `bad-document`, `did-mismatch`, `no-pds`, `no-signing-key`, `bad-signing-key`
 */
export function atprotoIdentityOf(did: string, json: unknown, source: string): AtprotoIdentity {
  const fail = (problem: ConstructorParameters<typeof IdentityError>[1], what: string) =>
    new IdentityError(did, problem, `DID document from ${source}: ${what}`);

  let doc: DidDocument;
  if (isWellFormed(json)) {
    doc = json;
  } else {
    // The schema says what is wrong, and where.
    const parsed = didDocumentSchema.safeParse(json);
    if (!parsed.success) {
      const issues = parsed.error.issues.slice(0, 5).map((i) => `${i.path.length ? formatPath(i.path) : '(document)'}: ${i.message}`);
      throw fail('bad-document', `not a valid DID document (${issues.join('; ')})`);
    }
    doc = parsed.data;
  }
  if (doc.id !== did) throw fail('did-mismatch', `its id is ${JSON.stringify(doc.id)}, not the DID that was resolved`);

  const isFragment = (id: string, fragment: string) => id === fragment || id === `${did}${fragment}`;

  const services = doc.service ?? [];
  const pdsService = services.find((s) => isFragment(s.id, '#atproto_pds'));
  if (!pdsService) {
    throw fail('no-pds', `no #atproto_pds service (services: ${services.map((s) => s.id).join(', ') || 'none'})`);
  }
  const types = Array.isArray(pdsService.type) ? pdsService.type : [pdsService.type];
  if (!types.includes('AtprotoPersonalDataServer')) {
    throw fail('no-pds', `service #atproto_pds has type ${JSON.stringify(pdsService.type)}, not AtprotoPersonalDataServer`);
  }
  const pds = pdsOrigin(pdsService.serviceEndpoint);
  if (pds === undefined) {
    throw fail('no-pds', `service #atproto_pds has serviceEndpoint ${describeValue(pdsService.serviceEndpoint)}, not an http(s) URL without path, query or fragment`);
  }

  const methods = doc.verificationMethod ?? [];
  const method = methods.find((m) => isFragment(m.id, '#atproto'));
  if (!method) {
    throw fail('no-signing-key', `no #atproto verification method (verificationMethod: ${methods.map((m) => m.id).join(', ') || 'none'})`);
  }
  if (method.publicKeyMultibase === undefined) throw fail('no-signing-key', 'verification method #atproto has no publicKeyMultibase');
  let key: FoundPublicKey;
  try {
    key = getPublicKeyFromDidController({ type: method.type, publicKeyMultibase: method.publicKeyMultibase });
  } catch (err) {
    throw fail('bad-signing-key', `verification method #atproto (type ${method.type}) is not a usable secp256k1 or P-256 key: ${(err as Error).message}`);
  }
  const compressed = compressPublicKey(key.publicKeyBytes);
  if (!compressed) {
    throw fail('bad-signing-key', `verification method #atproto (type ${method.type}) holds ${key.publicKeyBytes.length} key bytes, not a compressed or uncompressed EC point`);
  }
  // Legacy key types (EcdsaSecp256k1VerificationKey2019, …) carry the raw key, often
  // uncompressed (the PLC directory's own older documents do); did:key wants it compressed.
  // A Multikey that holds the compressed key already is its own multikey: no need to encode it again.
  const signingMultikey =
    method.type === 'Multikey' && compressed === key.publicKeyBytes ? method.publicKeyMultibase : `z${toBase58Btc(new Uint8Array([...MULTICODEC[key.type], ...compressed]))}`;

  return { did, pds, handle: handleOf(doc), signingKey: `did:key:${signingMultikey}`, signingMultikey, signingKeyType: key.type, signingKeyPoint: compressed };
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isOptionalString = (v: unknown) => v === undefined || typeof v === 'string';

/**
 * Whether `json` is shaped as `didDocumentSchema` says, checked by hand: the schema costs more
 * than the rest of reading a document, and every small repo's backfill reads one. Never more
 * lenient than the schema (a document it refuses goes to the schema, which explains).
 */
function isWellFormed(json: unknown): json is DidDocument {
  if (!isObject(json) || typeof json.id !== 'string') return false;
  const { alsoKnownAs, verificationMethod, service } = json;
  if (alsoKnownAs !== undefined && !(Array.isArray(alsoKnownAs) && alsoKnownAs.every((a) => typeof a === 'string'))) return false;
  if (verificationMethod !== undefined) {
    if (!Array.isArray(verificationMethod)) return false;
    for (const m of verificationMethod as unknown[]) {
      if (!isObject(m) || typeof m.id !== 'string' || typeof m.type !== 'string' || !isOptionalString(m.controller) || !isOptionalString(m.publicKeyMultibase)) return false;
    }
  }
  if (service !== undefined) {
    if (!Array.isArray(service)) return false;
    for (const s of service as unknown[]) {
      if (!isObject(s) || typeof s.id !== 'string' || !('serviceEndpoint' in s)) return false;
      if (typeof s.type !== 'string' && !(Array.isArray(s.type) && s.type.every((t) => typeof t === 'string'))) return false;
    }
  }
  return true;
}

/** The 33-byte SEC1 compressed form of an EC public key given compressed or uncompressed. */
function compressPublicKey(bytes: Uint8Array): Uint8Array | undefined {
  if (bytes.length === 33 && (bytes[0] === 0x02 || bytes[0] === 0x03)) return bytes;
  if (bytes.length !== 65 || bytes[0] !== 0x04) return undefined;
  // 0x04 ‖ X ‖ Y becomes (0x02 if Y is even, else 0x03) ‖ X.
  const out = new Uint8Array(33);
  out[0] = (bytes[64]! & 1) === 0 ? 0x02 : 0x03;
  out.set(bytes.subarray(1, 33), 1);
  return out;
}

/**
 * Origins of the endpoints seen lately: a PDS hosts many repos, so most documents name one seen
 * before, and a URL parse per document was a visible part of reading one. Bounded (at most
 * MAX_ORIGINS endpoints of MAX_CACHED_ENDPOINT characters): emptied when full.
 */
const origins = new Map<string, string | undefined>();
const MAX_ORIGINS = 4096;
/** Longer endpoints (no honest one is) are parsed every time, so the map stays small. */
const MAX_CACHED_ENDPOINT = 256;

function pdsOrigin(endpoint: unknown): string | undefined {
  if (typeof endpoint !== 'string') return undefined;
  if (origins.has(endpoint)) return origins.get(endpoint);
  const origin = parseOrigin(endpoint);
  if (endpoint.length > MAX_CACHED_ENDPOINT) return origin;
  if (origins.size >= MAX_ORIGINS) origins.clear();
  origins.set(endpoint, origin);
  return origin;
}

function parseOrigin(endpoint: string): string | undefined {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return undefined;
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '') return undefined;
  // The origin drops any user:password@ a hostile document put there.
  return url.origin;
}

function handleOf(doc: DidDocument): string | undefined {
  for (const aka of doc.alsoKnownAs ?? []) {
    if (!aka.startsWith('at://')) continue;
    const handle = aka.slice('at://'.length).toLowerCase();
    return isHandle(handle) ? handle : undefined;
  }
  return undefined;
}

function formatPath(path: PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i === 0 ? '' : '.'}${String(p)}`)).join('');
}

/**
 * A document value for a message, without serializing it: JSON.stringify recurses, and a hostile
 * document can nest thousands of levels deep within its byte cap.
 */
function describeValue(value: unknown): string {
  if (typeof value === 'string') return truncate(JSON.stringify(value));
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (value === null) return 'null';
  return typeof value === 'object' ? 'an object' : truncate(String(value));
}

function truncate(s: string | undefined, max = 120): string {
  if (s === undefined) return 'undefined';
  return s.length > max ? `${s.slice(0, max)}…` : s;
}
