/**
 * Resolved identities kept in memory for a while (live sync and maintenance look a DID's key up
 * again and again). Entries expire after `ttlMs`; past `maxEntries` the least recently used go
 * first. Failures are never cached. Backfill resolves with `fresh` (identity.ts): it reads each
 * DID's document at the moment it fetches the repo, so a key rotation or PDS move is seen at
 * once, and keeps no identity here.
 *
 * Handle checks (handle.ts) are kept apart, by handle and DID, and survive `invalidate` and
 * `fresh`: the document is read again, but a handle it still claims is not looked up again in
 * DNS and over HTTPS until its entry expires (`ttlMs`, or `failedHandleTtlMs` for a handle that did not
 * verify, which may have been DNS being down). A document that claims another handle, or a
 * handle that now names another DID, is another key.
 */
import type { AtprotoIdentity } from './did-document.ts';
import type { HandleCheck } from './handle.ts';

export interface IdentityCacheOptions {
  /** How long an entry is served. Default 10 minutes. */
  ttlMs: number;
  /** Most entries kept. Default 100,000 (a few tens of MB). */
  maxEntries: number;
  /** How long a handle that did not verify is served as such. Default 1 minute. */
  failedHandleTtlMs: number;
  /** Clock, for tests. Default `Date.now`. */
  now: () => number;
}

type Entry<T> = { value: T; expires: number };

export class IdentityCache {
  readonly #options: IdentityCacheOptions;
  // A Map iterates in insertion order: re-inserting on read makes the first key the least recent.
  readonly #entries = new Map<string, Entry<AtprotoIdentity>>();
  readonly #handles = new Map<string, Entry<HandleCheck>>();

  constructor(options: Partial<IdentityCacheOptions> = {}) {
    this.#options = { ttlMs: 600_000, maxEntries: 100_000, failedHandleTtlMs: 60_000, now: Date.now, ...options };
  }

  /** The cached identity of `did`, if one is there and fresh. */
  get(did: string): AtprotoIdentity | undefined {
    return this.#get(this.#entries, did);
  }

  set(did: string, identity: AtprotoIdentity): void {
    this.#set(this.#entries, did, identity, this.#options.ttlMs);
  }

  /** The cached check of `handle` against `did`, if one is there and fresh. */
  handleCheck(handle: string, did: string): HandleCheck | undefined {
    return this.#get(this.#handles, `${handle} ${did}`);
  }

  setHandleCheck(handle: string, did: string, check: HandleCheck): void {
    this.#set(this.#handles, `${handle} ${did}`, check, check.verified ? this.#options.ttlMs : Math.min(this.#options.ttlMs, this.#options.failedHandleTtlMs));
  }

  #get<T>(map: Map<string, Entry<T>>, key: string): T | undefined {
    const entry = map.get(key);
    if (!entry) return undefined;
    map.delete(key);
    if (entry.expires <= this.#options.now()) return undefined;
    map.set(key, entry);
    return entry.value;
  }

  #set<T>(map: Map<string, Entry<T>>, key: string, value: T, ttlMs: number): void {
    map.delete(key);
    map.set(key, { value, expires: this.#options.now() + ttlMs });
    while (map.size > this.#options.maxEntries) {
      const oldest = map.keys().next();
      if (oldest.done) break;
      map.delete(oldest.value);
    }
  }

  /** Drops `did`'s entry; true if there was one. */
  invalidate(did: string): boolean {
    return this.#entries.delete(did);
  }

  clear(): void {
    this.#entries.clear();
    this.#handles.clear();
  }

  get size(): number {
    return this.#entries.size;
  }
}
