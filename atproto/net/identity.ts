/**
 * DID resolution for backfill: `did:plc` through a PLC directory, `did:web` through the host's
 * `/.well-known/did.json`, each fetched under the address guard, a timeout and a size cap, then
 * read by `atprotoIdentityOf`.
 */
import { type AtprotoIdentity, atprotoIdentityOf } from './did-document.ts';
import { didProblem } from './did.ts';
import { type HandleCheckOptions, INVALID_HANDLE, checkHandle } from './handle.ts';
import { IdentityError } from './errors.ts';
import { type HttpOptions, httpGet, rateLimited } from './http.ts';
import type { IdentityCache } from './identity-cache.ts';

/** One decoder for every body (one per call cost more than the small document it read). */
const UTF8 = new TextDecoder();

export interface ResolveDidOptions extends HttpOptions {
  /** PLC directory, e.g. `https://plc.directory`. */
  plcUrl: string;
  /** Served from and filled (identities, and handle checks by handle and DID); without it every call goes to the network. */
  cache?: IdentityCache;
  /**
   * Read the document afresh and keep the identity nowhere: `cache` then serves and keeps only
   * handle checks. For backfill, which reads each DID's document once, at the moment it fetches
   * the repo: keeping every identity it resolved only filled memory (up to the cache's 100,000)
   * with entries nothing read.
   */
  fresh?: boolean;
  /** Cap on the DID document. Default 64 KiB (real ones are about 1 KiB). */
  maxDocumentBytes?: number;
  /**
   * How the document's handle is checked against the DID (handle.ts); `false` takes the
   * document's word. Default: checked with the same network options; an unverified handle
   * comes back as `handle.invalid`.
   */
  verifyHandle?: Pick<HandleCheckOptions, 'resolveTxt' | 'wellKnownUrl'> | false;
}

export const DEFAULT_MAX_DOCUMENT_BYTES = 64 * 1024;

/**
 * Resolves `did` to its PDS, handle and atproto signing key.
 *
 * The handle is verified both ways unless `verifyHandle: false` (see handle.ts): an unverified
 * one comes back as `handle.invalid`, with the document's claim in `claimedHandle`.
 *
 * @throws IdentityError for a DID that is not did:plc / atproto did:web, a document that is
 *   absent (`not-found`, `tombstoned`), unavailable, not JSON, for another DID, or lacks a PDS
 *   service or signing key — the message says which and where
 * @throws RateLimitedError, TransportError, ForbiddenAddressError, ResponseTooLargeError from the fetch
 */
export async function resolveDid(did: string, opts: ResolveDidOptions): Promise<AtprotoIdentity> {
  const cached = opts.fresh ? undefined : opts.cache?.get(did);
  if (cached) return cached;

  const url = didDocumentUrl(did, opts);
  const res = await httpGet(url, {
    ...opts,
    maxBytes: opts.maxDocumentBytes ?? DEFAULT_MAX_DOCUMENT_BYTES,
    headers: { accept: 'application/did+ld+json, application/json' },
  });
  const where = `${res.url}`;
  if (res.status === 429) throw rateLimited(res, opts.politeness, `resolving ${did}`);
  if (res.status !== 200) {
    res.body.cancel();
    if (res.status === 404) throw new IdentityError(did, 'not-found', `no DID document at ${where} (HTTP 404)`);
    if (res.status === 410) throw new IdentityError(did, 'tombstoned', `DID is tombstoned (HTTP 410 from ${where})`);
    throw new IdentityError(did, 'unavailable', `HTTP ${res.status} from ${where}`);
  }
  const bytes = await res.body.bytes();
  let json: unknown;
  try {
    json = JSON.parse(UTF8.decode(bytes));
  } catch {
    throw new IdentityError(did, 'bad-document', `DID document from ${where} is not JSON`);
  }
  const identity = atprotoIdentityOf(did, json, where);
  if (identity.handle !== undefined && opts.verifyHandle !== false) {
    const { plcUrl: _p, cache, maxDocumentBytes: _m, verifyHandle, fresh: _f, ...http } = opts;
    let check = cache?.handleCheck(identity.handle, did);
    if (!check) {
      check = await checkHandle(identity.handle, did, { ...http, ...verifyHandle });
      cache?.setHandleCheck(identity.handle, did, check);
    }
    identity.handleVerified = check.verified;
    if (!check.verified) {
      identity.claimedHandle = identity.handle;
      identity.handle = INVALID_HANDLE;
    }
  }
  if (!opts.fresh) opts.cache?.set(did, identity);
  return identity;
}

/** The last PLC directory URL `didDocumentUrl` resolved, with a trailing slash. */
let plcBase: { plcUrl: string; href: string } | undefined;

/**
 * Where `did`'s document lives. did:web documents are fetched over https; plain http is
 * allowed only for `localhost` (with a port, `did:web:localhost%3A1234`) when `allowPrivate`,
 * which is how tests serve them.
 *
 * @throws IdentityError `invalid-did`
 */
export function didDocumentUrl(did: string, opts: { plcUrl: string; allowPrivate: boolean }): URL {
  const problem = didProblem(did);
  if (problem !== undefined) throw new IdentityError(did.slice(0, 100), 'invalid-did', problem);
  if (did.startsWith('did:plc:')) {
    // `./<did>` against the directory's URL, the directory resolved once: the DID's characters
    // need no escaping, so appending it is that resolution (one parse per DID, not two).
    if (plcBase?.plcUrl !== opts.plcUrl) plcBase = { plcUrl: opts.plcUrl, href: new URL('./', opts.plcUrl.endsWith('/') ? opts.plcUrl : `${opts.plcUrl}/`).href };
    return new URL(`${plcBase.href}${did}`);
  }
  const host = decodeURIComponent(did.slice('did:web:'.length));
  const local = host === 'localhost' || host.startsWith('localhost:');
  const scheme = local && opts.allowPrivate ? 'http' : 'https';
  // didProblem admits only host names and ports URL accepts, so this cannot throw.
  return new URL(`${scheme}://${host}/.well-known/did.json`);
}
