/** Packed aggregates cross the wire as PostgreSQL's base64 (`onWire`) and come back byte for byte (`fromWire`). */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { freshDatabase } from '../test/stack.ts';
import { openPool } from '../storage/db/pool.ts';
import { fromWire, onWire } from './packed.ts';

let pool: pg.Pool;
beforeAll(async () => {
  pool = openPool(await freshDatabase('graph_packed_wire'));
});
afterAll(async () => {
  await pool?.end();
});

describe('packed aggregates on the wire', () => {
  it('come back as the bytes PostgreSQL aggregated, of any length (its base64 breaks lines every 76 characters)', async () => {
    const parts = [0, 1, 2, 3, 56, 57, 58, 76, 300, 20_000].map((n) => randomBytes(n));
    const { rows } = await pool.query<{ i: number; packed: string | null }>(
      `SELECT i, ${onWire(`string_agg(p, ''::bytea ORDER BY k)`)} AS packed
       FROM (SELECT i, k, substring(b FROM k * 7 + 1 FOR 7) AS p FROM unnest($1::bytea[]) WITH ORDINALITY AS u(b, i), generate_series(0, (octet_length(b) + 6) / 7 - 1) AS k) s
       GROUP BY i ORDER BY i`,
      [parts],
    );
    // An empty part has no rows to aggregate.
    const got = new Map(rows.map((r) => [Number(r.i), fromWire(r.packed!)]));
    for (const [i, part] of parts.entries()) {
      if (part.length === 0) expect(got.has(i + 1)).toBe(false);
      else expect(Buffer.compare(got.get(i + 1)!, part), `part of ${part.length} bytes`).toBe(0);
    }
    expect(rows.some((r) => r.packed!.includes('\n'))).toBe(true);
  });
});
