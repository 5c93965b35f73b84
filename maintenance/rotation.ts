/**
 * The rotating offset of a sampled periodic walk (rotating scrub, rotating validate). A walk with
 * sample rate R and offset k checks the nodes whose sampling hash h has (h + k) % R == 0, so the
 * offsets 0 … R−1 partition the mirror. Each completed run advances the offset by one step, and
 * the offset is kept in `job_state` (`rotation:<name>`), so R completed runs cover every slice
 * exactly once — the whole mirror — whatever worker runs them.
 *
 * The offset advances when a run completes, not when it starts: a walk that failed or was
 * cancelled leaves the offset where it was and the next run walks the same slice again, and a
 * completion reported twice (a retried activity) advances once. A changed rate starts a new
 * cycle at offset 0, since offsets of different rates do not partition together.
 */
import type pg from 'pg';
import { type Queryable, withTransaction } from '../storage/db/pool.ts';
import { readJobState, writeJobState } from './job-state.ts';

export interface RotationState {
  rate: number;
  /** The offset the next run walks. */
  next: number;
  /** Completed cycles of R runs at this rate. */
  cycle: number;
  /** Runs completed at this rate. */
  runs: number;
  /** The offset and walk of the last completed run. */
  last?: { offset: number; walkId: string; at: string };
}

export class InvalidRateError extends RangeError {
  override name = 'InvalidRateError';
}

function checkRate(rate: number): void {
  if (!Number.isInteger(rate) || rate < 1) throw new InvalidRateError(`sample rate ${rate} is not a whole number ≥ 1`);
}

/** The state to walk from at `rate`: `state` itself, or a new cycle at offset 0 when there is none or its rate differs. */
export function rotationAt(state: RotationState | undefined, rate: number): RotationState {
  checkRate(rate);
  if (state && state.rate === rate && Number.isInteger(state.next) && state.next >= 0 && state.next < rate) return state;
  return { rate, next: 0, cycle: 0, runs: 0 };
}

/**
 * The state after a run at `offset` and `rate` completed. A completion for an offset that is not
 * the one due (reported again), or of a rate that is no longer the rotation's, returns `state`
 * unchanged.
 */
export function advanceRotation(state: RotationState | undefined, rate: number, offset: number, walkId: string, at: Date = new Date()): RotationState {
  if (state && state.rate !== rate) return state;
  const s = rotationAt(state, rate);
  if (offset !== s.next) return s;
  const next = (offset + 1) % rate;
  return { rate, next, cycle: next === 0 ? s.cycle + 1 : s.cycle, runs: s.runs + 1, last: { offset, walkId, at: at.toISOString() } };
}

const key = (name: string) => `rotation:${name}`;

export async function readRotation(db: Queryable, name: string): Promise<RotationState | undefined> {
  return readJobState<RotationState>(db, key(name));
}

/** The offset the next run of rotation `name` walks at `rate` (starting the rotation when there is none). */
export async function claimRotation(pool: pg.Pool, name: string, rate: number): Promise<{ offset: number; rate: number; cycle: number; runs: number }> {
  return withTransaction(pool, async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [key(name)]);
    const stored = await readRotation(tx, name);
    const s = rotationAt(stored, rate);
    if (s !== stored) await writeJobState(tx, key(name), s);
    return { offset: s.next, rate: s.rate, cycle: s.cycle, runs: s.runs };
  });
}

/** Records that the run at `offset` completed; see {@link advanceRotation}. */
export async function completeRotation(pool: pg.Pool, name: string, rate: number, offset: number, walkId: string): Promise<RotationState> {
  return withTransaction(pool, async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [key(name)]);
    const stored = await readRotation(tx, name);
    const s = advanceRotation(stored, rate, offset, walkId);
    if (s !== stored) await writeJobState(tx, key(name), s);
    return s;
  });
}
