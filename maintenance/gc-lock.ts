/**
 * The transactions in which GC deletes or re-points block index rows. Each holds `GC_LOCK_KEY`
 * exclusively (a transaction-scoped advisory lock), so that an importer can take it shared
 * around its own transaction and know that no block it found indexed disappears before it
 * commits. They run on GC's own connection, the one that holds the mark tables.
 */
import type pg from 'pg';
import { GC_LOCK_KEY } from '../storage/db/locks.ts';

export { GC_LOCK_KEY };

/** Runs `fn` in a transaction on `client` holding `GC_LOCK_KEY`: COMMIT when it resolves, ROLLBACK when it throws. */
export async function inGcTransaction<T>(client: pg.ClientBase, fn: () => Promise<T>): Promise<T> {
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [GC_LOCK_KEY]);
    const out = await fn();
    await client.query('COMMIT');
    return out;
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  }
}
