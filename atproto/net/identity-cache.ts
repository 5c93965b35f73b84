/**
 * Resolved identities kept in memory for a while, so a bulk backfill does not ask the PLC
 * directory again for every retry of a page. Entries expire after `ttlMs`; past `maxEntries`
 * the least recently used go first. Failures are never cached. Backfill `invalidate`s a DID
 * before each backfill of it, so a key rotation or PDS move is seen at once.
 */
import type { AtprotoIdentity } from './did-document.ts';

export interface IdentityCacheOptions {
  /** How long an entry is served. Default 10 minutes. */
  ttlMs: number;
  /** Most entries kept. Default 100,000 (a few tens of MB). */
  maxEntries: number;
  /** Clock, for tests. Default `Date.now`. */
  now: () => number;
}

export class IdentityCache {
  readonly #options: IdentityCacheOptions;
  // A Map iterates in insertion order: re-inserting on read makes the first key the least recent.
  readonly #entries = new Map<string, { identity: AtprotoIdentity; expires: number }>();

  constructor(options: Partial<IdentityCacheOptions> = {}) {
    this.#options = { ttlMs: 600_000, maxEntries: 100_000, now: Date.now, ...options };
  }

  /** The cached identity of `did`, if one is there and fresh. */
  get(did: string): AtprotoIdentity | undefined {
    const entry = this.#entries.get(did);
    if (!entry) return undefined;
    this.#entries.delete(did);
    if (entry.expires <= this.#options.now()) return undefined;
    this.#entries.set(did, entry);
    return entry.identity;
  }

  set(did: string, identity: AtprotoIdentity): void {
    this.#entries.delete(did);
    this.#entries.set(did, { identity, expires: this.#options.now() + this.#options.ttlMs });
    while (this.#entries.size > this.#options.maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done) break;
      this.#entries.delete(oldest.value);
    }
  }

  /** Drops `did`'s entry; true if there was one. */
  invalidate(did: string): boolean {
    return this.#entries.delete(did);
  }

  clear(): void {
    this.#entries.clear();
  }

  get size(): number {
    return this.#entries.size;
  }
}
