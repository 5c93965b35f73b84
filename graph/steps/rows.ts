/**
 * Batched row lookups for Pack and Blob nodes: one query per batch of keys, one batch in flight
 * at a time, so that the lookups of the many small roots a walk holds open go together instead
 * of a query per turn of the event loop.
 */
import type pg from 'pg';
import { Batcher } from '../batch.ts';
import type { BlobRow, PackRow, RowLoaders } from './context.ts';

export function rowLoaders(pool: pg.Pool): RowLoaders {
  return {
    knownPacks: new Map(),
    pack: new Batcher(async (keys: string[]) => {
      const { rows } = await pool.query<{ id: string; key: string; size_bytes: string; block_count: number; created_at: Date }>(
        'SELECT id, key, size_bytes, block_count, created_at FROM packs WHERE key = ANY($1::text[])',
        [keys],
      );
      const byKey = new Map<string, PackRow>(
        rows.map((r) => [r.key, { id: Number(r.id), key: r.key, sizeBytes: Number(r.size_bytes), blockCount: r.block_count, createdAt: r.created_at }]),
      );
      return keys.map((k) => byKey.get(k) ?? null);
    }, { serial: true }),
    blob: new Batcher(async (cids: string[]) => {
      const { rows } = await pool.query<{ cid: string; status: 'present' | 'missing'; key: string | null; size: string | null; created_at: Date }>(
        'SELECT cid, status, key, size, created_at FROM blobs WHERE cid = ANY($1::text[])',
        [cids],
      );
      const byCid = new Map<string, BlobRow>(
        rows.map((r) => [r.cid, { cid: r.cid, status: r.status, key: r.key, size: r.size === null ? null : Number(r.size), createdAt: r.created_at }]),
      );
      return cids.map((c) => byCid.get(c) ?? null);
    }, { serial: true }),
  };
}
