/**
 * Which blocks the index already holds, for the store path's reuse check (refcount bookkeeping
 * itself is `storage/refcounts.ts`).
 */
import type pg from 'pg';
import { latin1 } from '../atproto/cid.ts';

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
