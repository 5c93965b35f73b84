/**
 * Plans of getRepo CARs kept in PostgreSQL (`repo_car_plans`, migration 0006): what the CAR of
 * a repo's head is made of — the header and commit as bytes, then ranges of pack bytes, each
 * with its CRC-32 — so that a server that never sent the head answers with one query and the
 * pack reads, no walk and no per-block hash. A head is content-addressed and a pack key is its
 * content's hash, so a plan stays right for as long as its head is the repo's and its packs
 * exist; the row is read only for the repo's current head and only while every pack it names
 * still has its `packs` row (GC's sweep deletes the link rows with the pack row).
 */
import type pg from 'pg';
import { withTransaction } from '../storage/db/pool.ts';

/** A piece of a stored plan: bytes of its own, or a range of a pack with its CRC-32. */
export type StoredPiece = { bytes: Uint8Array } | { pack: number; start: number; end: number; crc: number };

export interface StoredPlan {
  /** Blobstore keys of the packs the ranges read, by the `pack` ordinal of a piece. */
  packKeys: string[];
  pieces: StoredPiece[];
}

const VERSION = 1;
const OWN = 0;
const RANGE = 1;

/** The plan as bytes: version, count, then per piece its kind and fields (big-endian). */
export function encodePlan(pieces: StoredPiece[]): Buffer {
  let size = 5;
  for (const p of pieces) size += 'bytes' in p ? 5 + p.bytes.length : 1 + 4 + 6 + 4 + 4;
  const out = Buffer.allocUnsafe(size);
  out[0] = VERSION;
  out.writeUInt32BE(pieces.length, 1);
  let at = 5;
  for (const p of pieces) {
    if ('bytes' in p) {
      out[at] = OWN;
      out.writeUInt32BE(p.bytes.length, at + 1);
      out.set(p.bytes, at + 5);
      at += 5 + p.bytes.length;
    } else {
      out[at] = RANGE;
      out.writeUInt32BE(p.pack, at + 1);
      out.writeUIntBE(p.start, at + 5, 6);
      out.writeUInt32BE(p.end - p.start, at + 11);
      out.writeUInt32BE(p.crc >>> 0, at + 15);
      at += 19;
    }
  }
  return out;
}

/** The pieces of an encoded plan, or null when the bytes are not one this code wrote. */
export function decodePlan(bytes: Buffer): StoredPiece[] | null {
  if (bytes.length < 5 || bytes[0] !== VERSION) return null;
  const count = bytes.readUInt32BE(1);
  const pieces: StoredPiece[] = [];
  let at = 5;
  for (let i = 0; i < count; i++) {
    const kind = bytes[at];
    if (kind === OWN && at + 5 <= bytes.length) {
      const len = bytes.readUInt32BE(at + 1);
      if (at + 5 + len > bytes.length) return null;
      pieces.push({ bytes: bytes.subarray(at + 5, at + 5 + len) });
      at += 5 + len;
    } else if (kind === RANGE && at + 19 <= bytes.length) {
      const start = bytes.readUIntBE(at + 5, 6);
      pieces.push({ pack: bytes.readUInt32BE(at + 1), start, end: start + bytes.readUInt32BE(at + 11), crc: bytes.readUInt32BE(at + 15) });
      at += 19;
    } else {
      return null;
    }
  }
  return at === bytes.length ? pieces : null;
}

/** The stored plans of one database. */
export class CarPlanStore {
  readonly #pool: pg.Pool;
  readonly #log: (line: string) => void;

  constructor(pool: pg.Pool, log: (line: string) => void = () => {}) {
    this.#pool = pool;
    this.#log = log;
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
   * has moved on or one of the packs has no row (GC removed it meanwhile): then nothing is
   * stored. Failures are logged, not thrown: a plan only saves work.
   */
  async save(did: string, head: Uint8Array, plan: StoredPlan): Promise<boolean> {
    try {
      return await withTransaction(this.#pool, async (tx) => {
        await tx.query('DELETE FROM repo_car_plans WHERE did = $1', [did]);
        const inserted = await tx.query(
          `INSERT INTO repo_car_plans (did, head_cid, pack_count, pieces)
           SELECT did, head_cid, $3, $4 FROM repos WHERE did = $1 AND head_cid = $2`,
          [did, head, plan.packKeys.length, encodePlan(plan.pieces)],
        );
        if (inserted.rowCount !== 1) return false;
        const linked = await tx.query(
          `INSERT INTO repo_car_plan_packs (did, ord, pack_id)
           SELECT $1, k.ord - 1, p.id FROM unnest($2::text[]) WITH ORDINALITY AS k(key, ord) JOIN packs p ON p.key = k.key`,
          [did, plan.packKeys],
        );
        if (linked.rowCount !== plan.packKeys.length) throw new IncompletePlan();
        return true;
      });
    } catch (err) {
      if (!(err instanceof IncompletePlan)) this.#log(`serve: could not store the CAR plan of ${did}: ${(err as Error)?.message ?? String(err)}`);
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

/** A pack named by the plan lost its row between the walk and the insert: rolled back. */
class IncompletePlan extends Error {}
