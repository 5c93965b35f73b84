/**
 * The CAR plans a server reads and writes (storage/car-plans.ts, `repo_car_plans`): a head
 * walked once is sent by every server from its plan, with no walk. Loading checks the plan is
 * for the repo's current head and that every pack it reads still has its row; saving is best
 * effort (a plan only saves work), logged when it fails.
 */
import type pg from 'pg';
import { withTransaction } from '../storage/db/pool.ts';
import { IncompleteCarPlanError, PLAN_MIN_BYTES, decodePlan, writeCarPlan, type StoredPlan } from '../storage/car-plans.ts';

export type { StoredPiece, StoredPlan } from '../storage/car-plans.ts';

/** The stored plans of one database. */
export class CarPlanStore {
  readonly #pool: pg.Pool;
  readonly #log: (line: string) => void;
  /** CARs smaller than this are not planned (see {@link PLAN_MIN_BYTES}). */
  readonly minBytes: number;

  constructor(pool: pg.Pool, log: (line: string) => void = () => {}, opts: { minBytes?: number } = {}) {
    this.#pool = pool;
    this.#log = log;
    this.minBytes = opts.minBytes ?? PLAN_MIN_BYTES;
  }

  /**
   * The plan of `did`'s CAR at `head`, when one is stored for that head and every pack it
   * reads still has its row; else null.
   */
  async load(did: string, head: Uint8Array): Promise<StoredPlan | null> {
    const { rows } = await this.#pool.query<{ pack_count: number; pieces: Buffer; keys: string[] }>({
      name: 'serve-car-plan',
      text: `SELECT pl.pack_count, pl.pieces,
               ARRAY(SELECT p.key FROM repo_car_plan_packs pp JOIN packs p ON p.id = pp.pack_id WHERE pp.did = pl.did ORDER BY pp.ord) AS keys
             FROM repo_car_plans pl WHERE pl.did = $1 AND pl.head_cid = $2`,
      values: [did, head],
    });
    const row = rows[0];
    if (!row || row.keys.length !== row.pack_count) return null;
    const pieces = decodePlan(row.pieces);
    if (!pieces || pieces.some((p) => 'pack' in p && p.pack >= row.keys.length)) return null;
    return { packKeys: row.keys, pieces };
  }

  /**
   * Stores the plan of `did`'s CAR at `head`, replacing the repo's plan, unless the repo's head
   * has moved on or a pack it names lost its row (GC removed it meanwhile): then nothing is
   * stored; nor when the CAR is smaller than {@link minBytes}. True when stored.
   */
  async save(did: string, head: Uint8Array, plan: StoredPlan): Promise<boolean> {
    let size = 0;
    for (const p of plan.pieces) size += 'bytes' in p ? p.bytes.length : p.end - p.start;
    if (size < this.minBytes) return false;
    try {
      return await withTransaction(this.#pool, (tx) => writeCarPlan(tx, did, head, plan));
    } catch (err) {
      if (!(err instanceof IncompleteCarPlanError)) this.#log(`serve: could not store the CAR plan of ${did}: ${(err as Error)?.message ?? String(err)}`);
      return false;
    }
  }

  /** Drops `did`'s plan when it is the one for `head` (a range of it did not check). */
  async drop(did: string, head: Uint8Array): Promise<void> {
    try {
      await this.#pool.query('DELETE FROM repo_car_plans WHERE did = $1 AND head_cid = $2', [did, head]);
    } catch (err) {
      this.#log(`serve: could not drop the CAR plan of ${did}: ${(err as Error)?.message ?? String(err)}`);
    }
  }
}
