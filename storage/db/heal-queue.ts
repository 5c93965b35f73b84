/**
 * The blobstore heal queue in Postgres: components of a multiplexed store that missed a write
 * or held a bad copy, until scrub (or an operator) repairs them.
 */
import type { HealEntry, HealQueue } from '../blobstore/types.ts';
import type { Queryable } from './pool.ts';

/** An open or healed entry as stored. */
export interface HealQueueRow extends HealEntry {
  id: number;
  createdAt: Date;
  lastSeenAt: Date;
  /** How many times the entry was recorded while open. */
  seenCount: number;
  healedAt: Date | null;
}

interface Row {
  id: string;
  key: string;
  component: string;
  reason: HealEntry['reason'];
  detail: string | null;
  created_at: Date;
  last_seen_at: Date;
  seen_count: number;
  healed_at: Date | null;
}

export class PgHealQueue implements HealQueue {
  readonly #db: Queryable;

  /** `db` is usually the worker's pool; a client in a transaction works too. */
  constructor(db: Queryable) {
    this.#db = db;
  }

  /**
   * Records that `entry.component` needs healing for `entry.key`. Recording a key and component
   * that already have an open entry updates it (latest reason and detail, seen count + 1)
   * instead of adding a row, so a flapping component does not fill the table.
   */
  async record(entry: HealEntry): Promise<void> {
    await this.#db.query(
      `INSERT INTO heal_queue (key, component, reason, detail)
       VALUES ($1, $2, $3, $4)
       ON CONFLICT (key, component) WHERE healed_at IS NULL DO UPDATE
         SET reason = EXCLUDED.reason,
             detail = EXCLUDED.detail,
             last_seen_at = now(),
             seen_count = heal_queue.seen_count + 1`,
      [entry.key, entry.component, entry.reason, entry.detail ?? null],
    );
  }

  /** Open entries, oldest first, at most `limit`. */
  async listOpen(limit = 100): Promise<HealQueueRow[]> {
    const { rows } = await this.#db.query<Row>(
      `SELECT id, key, component, reason, detail, created_at, last_seen_at, seen_count, healed_at
       FROM heal_queue WHERE healed_at IS NULL ORDER BY id LIMIT $1`,
      [limit],
    );
    return rows.map(toEntry);
  }

  /** Closes entry `id`. Returns false when it does not exist or was already healed. */
  async markHealed(id: number): Promise<boolean> {
    const res = await this.#db.query('UPDATE heal_queue SET healed_at = now() WHERE id = $1 AND healed_at IS NULL', [id]);
    return res.rowCount === 1;
  }

  /**
   * Closes the open entry for `key` on `component`, if any (scrub repairs by key, not by id).
   * Returns whether there was one.
   */
  async markHealedKey(key: string, component: string): Promise<boolean> {
    const res = await this.#db.query(
      'UPDATE heal_queue SET healed_at = now() WHERE key = $1 AND component = $2 AND healed_at IS NULL',
      [key, component],
    );
    return res.rowCount === 1;
  }

  /** Number of open entries (the heal-queue-length metric). */
  async countOpen(): Promise<number> {
    const { rows } = await this.#db.query<{ n: string }>('SELECT count(*) AS n FROM heal_queue WHERE healed_at IS NULL');
    return Number(rows[0]?.n ?? 0);
  }
}

function toEntry(r: Row): HealQueueRow {
  return {
    id: Number(r.id),
    key: r.key,
    component: r.component,
    reason: r.reason,
    ...(r.detail === null ? {} : { detail: r.detail }),
    createdAt: r.created_at,
    lastSeenAt: r.last_seen_at,
    seenCount: r.seen_count,
    healedAt: r.healed_at,
  };
}
