/**
 * Refcount bookkeeping shared by every writer of references (the importer, retention): changes
 * are summed per block and applied in CID byte order, the one lock order, so that concurrent
 * writers never deadlock on `blocks` rows.
 */
import type pg from 'pg';
import { latin1 } from '../atproto/cid.ts';

/** Refcount changes, summed per block and applied in CID order (so concurrent imports never deadlock). */
export class RefDeltas {
  readonly #d = new Map<string, number>();
  // Keyed by the CID bytes as a latin1 string: one char per byte, the cheapest exact key.
  add(cid: Uint8Array, delta: number): void {
    const k = latin1(cid, 0, cid.length);
    this.#d.set(k, (this.#d.get(k) ?? 0) + delta);
  }
  get(cid: Uint8Array): number {
    return this.#d.get(latin1(cid, 0, cid.length)) ?? 0;
  }
  /** Applies every non-zero change, except to `skip` (blocks that were inserted with theirs). */
  async apply(db: pg.ClientBase, skip: Uint8Array[] = []): Promise<void> {
    for (const c of skip) this.#d.delete(latin1(c, 0, c.length));
    // latin1 strings compare like their bytes: this is CID byte order, the lock order.
    const entries = [...this.#d].filter(([, d]) => d !== 0).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    for (let i = 0; i < entries.length; i += 20_000) {
      const batch = entries.slice(i, i + 20_000);
      const res = await db.query(
        `UPDATE blocks b SET refcount = b.refcount + t.d
         FROM unnest($1::bytea[], $2::bigint[]) AS t(c, d) WHERE b.cid = t.c`,
        [batch.map(([k]) => Buffer.from(k, 'latin1')), batch.map(([, d]) => d)],
      );
      if (res.rowCount !== batch.length) {
        throw new Error(`refcount update reached ${res.rowCount} of ${batch.length} blocks: a referenced block is not indexed`);
      }
    }
  }
}
