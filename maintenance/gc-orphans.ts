/**
 * GC's orphan step: objects under `packs/` and `blobs/` that no row names — an import that
 * crashed between its upload and its transaction, a GC that crashed between its transaction and
 * the delete. The blobstore keeps no creation time, so the first run that sees an orphan notes
 * the time (`job_state` 'gc:orphans'), and a later run deletes it once it has been an orphan for
 * longer than the grace period, after checking once more that no row names it. An upload whose
 * transaction is still to come is younger than that.
 */
import type pg from 'pg';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { readJobState, writeJobState } from './job-state.ts';
import type { GcReport } from './gc.ts';

const PREFIXES = [
  { prefix: 'packs/', table: 'packs' },
  { prefix: 'blobs/', table: 'blobs' },
] as const;

const STATE_KEY = 'gc:orphans';

export async function sweepOrphans(
  db: pg.ClientBase,
  store: BlobStore,
  out: GcReport['orphans'],
  now: Date,
  cutoff: Date,
  dryRun: boolean,
  progress: () => Promise<void>,
): Promise<void> {
  const firstSeen = (await readJobState<Record<string, string>>(db, STATE_KEY)) ?? {};
  // Only the orphans still there: keys that got a row or went away are forgotten.
  const still: Record<string, string> = {};
  for (const { prefix, table } of PREFIXES) {
    let cursor: string | undefined;
    do {
      const page = await store.list(prefix, { limit: 1000, ...(cursor ? { cursor } : {}) });
      cursor = page.cursor;
      if (page.keys.length === 0) continue;
      const { rows } = await db.query<{ key: string }>(`SELECT key FROM ${table} WHERE key = ANY($1::text[])`, [page.keys]);
      const named = new Set(rows.map((r) => r.key));
      for (const key of page.keys) {
        if (named.has(key)) continue;
        out.seen++;
        const seen = firstSeen[key];
        const due = seen !== undefined && new Date(seen) < cutoff;
        if (!due || dryRun) {
          still[key] = seen ?? now.toISOString();
          if (due) out.deleted++;
          continue;
        }
        // Named since the page was read (an import that just committed)? Then it is no orphan.
        const again = await db.query(`SELECT 1 FROM ${table} WHERE key = $1`, [key]);
        if (again.rowCount) continue;
        await store.delete(key);
        out.deleted++;
      }
      await progress();
    } while (cursor !== undefined);
  }
  if (!dryRun) await writeJobState(db, STATE_KEY, still);
}
