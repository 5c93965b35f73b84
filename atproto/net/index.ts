/**
 * The network side of backfill: DID resolution and the `com.atproto.sync.*` calls, with the
 * address guard, per-host politeness, timeouts, byte caps, and every failure classified into a
 * named error whose `kind` is its resync outcome. No Temporal, no Postgres.
 */
export * from './errors.ts';
export { MAX_DID_LENGTH, didProblem, isMirrorableDid, showDid } from './did.ts';
export { type AddressPolicy, type LookupAddress, type LookupFn, checkHostAllowed, forbiddenRangeOf } from './address-guard.ts';
export { DEFAULT_POLITENESS, Politeness, type PolitenessOptions, type Release } from './politeness.ts';
export { ResponseBody } from './body.ts';
export { DEFAULT_TIMEOUT_MS, type HttpOptions, retryDelayMs } from './http.ts';
export { type AtprotoIdentity, atprotoIdentityOf } from './did-document.ts';
export { type HandleCheck, type HandleCheckOptions, INVALID_HANDLE, checkHandle } from './handle.ts';
export { IdentityCache, type IdentityCacheOptions } from './identity-cache.ts';
export { DEFAULT_MAX_DOCUMENT_BYTES, type ResolveDidOptions, didDocumentUrl, resolveDid } from './identity.ts';
export {
  type GetBlobOptions,
  type GetRepoOptions,
  type ListReposPage,
  type ListReposOptions,
  type ListedRepo,
  type SkippedListing,
  type RepoStatus,
  type SyncOptions,
  getBlob,
  getRepo,
  getRepoBytes,
  getRepoStatus,
  openRepo,
  listAllRepos,
  listRepos,
} from './sync.ts';
