/**
 * How far the event log is final: an id below which every event that will ever be visible
 * already is, so that a reader going by id (the event stream, `id > cursor`) never passes an
 * event that commits later.
 *
 * Event ids come from a sequence as rows are inserted, and transactions commit in any order: a
 * large import that took ids 100–199 commits seconds after a live event that took 200. Reading up
 * to the newest visible id would send 200, move the cursor past 100–199, and never send them.
 *
 * The protocol:
 * - every transaction that inserts events takes `EVENT_WRITER_LOCK_KEY` shared with its BEGIN
 *   (`EVENT_WRITER`, options for `withTransaction`), so before it takes any id, and holds it
 *   until it has ended: PostgreSQL releases a transaction's locks after its commit is visible
 *   to new snapshots;
 * - the reader notes the sequence's last value, and then which transactions hold the lock: each
 *   id up to that value was taken by one of them, or by a transaction that has ended;
 * - once none of those holds the lock any more, every event up to that value that will ever be
 *   visible is, to any statement that starts from then on.
 *
 * The sequence hands out ids one at a time (`CACHE 1`, the default): a cached range would be
 * taken before the transactions that use it exist. A long transaction that inserts no event (a
 * GC sweep, an idle session in psql) holds nothing back. A writer that hangs inside its
 * transaction (its process frozen, its network cut) holds the stream back until PostgreSQL ends
 * it, as it holds its repos' rows and GC's lock: `idle_in_transaction_session_timeout` and TCP
 * keepalives on the server bound all three (`repowalk_serve_stream_held_events` grows meanwhile).
 */
import type pg from 'pg';
import { EVENT_WRITER_LOCK_KEY } from './db/locks.ts';
import type { Queryable, TransactionOptions } from './db/pool.ts';

/** `withTransaction` options for a transaction that inserts events. */
export const EVENT_WRITER: TransactionOptions = { sharedLocks: [EVENT_WRITER_LOCK_KEY] };

// pg_locks shows a one-key (bigint) advisory lock as its two 32-bit halves, objsubid 1.
const CLASSID = BigInt.asUintN(32, EVENT_WRITER_LOCK_KEY >> 32n).toString();
const OBJID = BigInt.asUintN(32, EVENT_WRITER_LOCK_KEY).toString();

// Two statements in one round trip, in this order: the sequence first, then the writers. An
// advisory lock is per database; other databases of the server (other mirrors) hold nothing back.
const NOTE_SQL = `SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS allocated FROM events_id_seq;
SELECT virtualtransaction AS tx FROM pg_locks
  WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND classid = ${CLASSID} AND objid = ${OBJID} AND objsubid = 1`;

/** Notes waiting for their writers, at most: past it the oldest are let go (later ones settle no earlier). */
const MAX_PENDING = 256;

interface Note {
  upTo: number;
  writers: Set<string>;
}

export class EventHorizon {
  #final = 0;
  #allocated = 0;
  /** Sequence values noted while writers were in flight, oldest first, with the writers left. */
  #pending: Note[] = [];

  /** The highest id known final (0 before the first `advance`). */
  get final(): number {
    return this.#final;
  }

  /** The sequence's last value at the last `advance`: ids past `final` up to it may still commit. */
  get allocated(): number {
    return this.#allocated;
  }

  /** Notes the sequence and the writers, settles the notes whose writers have all ended, and returns `final`. */
  async advance(db: Queryable): Promise<number> {
    const [seq, locks] = (await db.query(NOTE_SQL)) as unknown as [pg.QueryResult<{ allocated: string }>, pg.QueryResult<{ tx: string }>];
    const allocated = Number(seq.rows[0]?.allocated ?? 0);
    this.#allocated = allocated;
    const writers = new Set(locks.rows.map((r) => r.tx));
    const pending: Note[] = [];
    for (const note of this.#pending) {
      for (const w of note.writers) if (!writers.has(w)) note.writers.delete(w);
      if (note.writers.size === 0) this.#final = Math.max(this.#final, note.upTo);
      else pending.push(note);
    }
    if (writers.size === 0) this.#final = Math.max(this.#final, allocated);
    else if (allocated > this.#final && (pending.at(-1)?.upTo ?? -1) < allocated) pending.push({ upTo: allocated, writers });
    this.#pending = pending.length > MAX_PENDING ? pending.slice(pending.length - MAX_PENDING) : pending;
    return this.#final;
  }
}
