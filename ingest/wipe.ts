/**
 * Removing a repo's stored rows (when it leaves the mirror: deleted upstream, or dropped by the
 * filter), with the references they held released.
 */
import type pg from 'pg';

/**
 * Deletes the repo's records, events and collection counts on `tx` (which holds the repo row
 * locked), and adds the references they and the stored head held to `deltas` as releases. The
 * caller writes the repo row.
 */
export async function wipeRepoRows(tx: pg.ClientBase, did: string, deltas: { add(cid: Uint8Array, delta: number): void }): Promise<void> {
  const head = await tx.query<{ head_cid: Buffer | null }>('SELECT head_cid FROM repos WHERE did = $1', [did]);
  if (head.rows[0]?.head_cid) deltas.add(head.rows[0].head_cid, -1);
  const recs = await tx.query<{ cid: Buffer }>('DELETE FROM records WHERE did = $1 RETURNING cid', [did]);
  for (const r of recs.rows) deltas.add(r.cid, -1);
  const evs = await tx.query<{ cid: Buffer | null }>('DELETE FROM events WHERE did = $1 RETURNING cid', [did]);
  for (const e of evs.rows) if (e.cid) deltas.add(e.cid, -1);
  await tx.query('DELETE FROM collection_counts WHERE did = $1', [did]);
}
