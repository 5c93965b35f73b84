/** `job_state`: small JSON values the periodic jobs keep between runs (rotation offsets, stats, GC's last report). */
import type { Queryable } from '../storage/db/pool.ts';

export async function readJobState<T>(db: Queryable, key: string): Promise<T | undefined> {
  const { rows } = await db.query<{ value: T }>('SELECT value FROM job_state WHERE key = $1', [key]);
  return rows[0]?.value;
}

export async function writeJobState(db: Queryable, key: string, value: unknown): Promise<void> {
  await db.query(
    `INSERT INTO job_state (key, value, updated_at) VALUES ($1, $2, now())
     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()`,
    [key, JSON.stringify(value)],
  );
}
