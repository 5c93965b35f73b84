/**
 * Refcount bookkeeping shared by every writer of stored state (the batched store, drops,
 * retention): changes summed per block and applied in CID byte order, so that concurrent
 * transactions take block row locks in one order and cannot deadlock on each other.
 */
import type pg from 'pg';
import { latin1 } from '../atproto/cid.ts';

/** Refcount changes, summed per block and applied in CID order. */
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

/**
 * Which of `cids` the block index holds, as latin1 strings of their bytes. The CIDs go to the
 * server as one binary parameter of 36-byte slices: a bytea[] would travel as hex text, which
 * cost more than the lookup itself.
 */
export async function indexedAmong(db: pg.ClientBase, cids: Buffer[]): Promise<Set<string>> {
  const out = new Set<string>();
  const width = 36;
  for (let i = 0; i < cids.length; i += 50_000) {
    const batch = cids.slice(i, i + 50_000);
    if (batch.some((c) => c.length !== width)) throw new Error('indexedAmong takes 36-byte CIDs (CIDv1, SHA-256)');
    const { rows } = await db.query<{ cid: Buffer }>(
      `SELECT cid FROM blocks WHERE cid IN (SELECT substring($1::bytea FROM i * ${width} + 1 FOR ${width}) FROM generate_series(0, $2::int - 1) AS i)`,
      [Buffer.concat(batch), batch.length],
    );
    for (const r of rows) out.add(latin1(r.cid, 0, r.cid.length));
  }
  return out;
}
