/**
 * GC's repack step: a pack older than the grace period whose live share of bytes fell below a
 * threshold has its live blocks (each checked against its CID) copied into a new pack — several
 * such packs into one, up to a target size — and their index rows re-pointed at it in one
 * transaction. The old pack is then garbage, and the next run's sweep removes it: readers that
 * located a block in it before the move keep a whole GC interval to finish.
 *
 * A pack's share counts what each live block takes in it (its bytes, its CID and a varint); what
 * is not a live block's — dead blocks, copies of blocks indexed in another pack — is what
 * repacking frees. A pack with a block that does not match its CID is left alone for scrub and
 * validate to find: a corrupt block is never copied into a fresh pack.
 */
import type pg from 'pg';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { PackWriter, putPack } from '../storage/packs.ts';
import { blockHashMatches } from '../graph/blocks.ts';
import { LIVE_BLOCK } from './gc-mark.ts';
import { inGcTransaction } from './gc-lock.ts';
import type { GcReport } from './gc.ts';

export interface RepackOptions {
  /** Repack packs whose live share is below this (0 to 1). */
  below: number;
  /** New packs are closed at about this size. */
  targetBytes: number;
  dryRun: boolean;
}

/** Length of a pack's CAR header (`{ version: 1, roots: [] }` and its varint), as `storage/packs.ts` writes it. */
const PACK_HEADER_BYTES = 18;
/** Every block CID in a pack is a 36-byte CIDv1 with SHA-256. */
const CID_BYTES = 36;
const BATCH = 200;

function varintLengthSql(expr: string): string {
  return `(CASE WHEN ${expr} < 128 THEN 1 WHEN ${expr} < 16384 THEN 2 WHEN ${expr} < 2097152 THEN 3 ELSE 4 END)`;
}

interface Source {
  id: string;
  size: number;
  blocks: { cid: Buffer; offset: number; length: number }[];
}

/** Repacks the packs older than `cutoff` below the threshold, on `client` (which holds the mark tables). */
export async function repackPacks(
  client: pg.ClientBase,
  store: BlobStore,
  out: GcReport['repack'],
  cutoff: Date,
  opts: RepackOptions,
  progress: () => Promise<void>,
): Promise<void> {
  let writer = new PackWriter();
  let group: Source[] = [];

  const flush = async () => {
    if (group.length === 0) return;
    const sources = group;
    const pack = writer.finish();
    group = [];
    writer = new PackWriter();
    out.packs += sources.length;
    out.bytesBefore += sources.reduce((n, s) => n + s.size, 0);
    out.bytesAfter += pack.size;
    out.newPacks++;
    if (opts.dryRun) {
      out.blocksMoved += pack.entries.length;
      return;
    }
    // The new pack is in the blobstore before any row names it.
    await putPack(store, pack);
    const from = new Map<string, string>();
    for (const s of sources) for (const b of s.blocks) from.set(b.cid.toString('latin1'), s.id);
    const entries = [...pack.entries].sort((a, b) => Buffer.compare(Buffer.from(a.cid), Buffer.from(b.cid)));
    const cids = entries.map((e) => Buffer.from(e.cid));
    out.blocksMoved += await inGcTransaction(client, async () => {
      const { rows } = await client.query<{ id: string }>(
        `INSERT INTO packs (key, size_bytes, block_count) VALUES ($1, $2, $3)
         ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key RETURNING id`,
        [pack.key, pack.size, pack.entries.length],
      );
      // The importers' lock order.
      await client.query(`SELECT count(*) FROM (SELECT 1 FROM blocks WHERE cid = ANY($1::bytea[]) ORDER BY cid FOR UPDATE) l`, [cids]);
      // Only rows still in the pack they were read from.
      const res = await client.query(
        `UPDATE blocks b SET pack_id = $1, byte_offset = t.o, byte_length = t.l
         FROM unnest($2::bytea[], $3::bigint[], $4::integer[], $5::bigint[]) AS t(c, o, l, s)
         WHERE b.cid = t.c AND b.pack_id = t.s`,
        [rows[0]!.id, cids, entries.map((e) => e.offset), entries.map((e) => e.length), cids.map((c) => from.get(c.toString('latin1'))!)],
      );
      return res.rowCount ?? 0;
    });
    await progress();
  };

  let after = 0;
  for (;;) {
    const { rows } = await client.query<{ id: string; key: string; size_bytes: string }>(
      `SELECT p.id, p.key, p.size_bytes FROM packs p
       JOIN LATERAL (
         SELECT count(*) AS live_blocks, coalesce(sum(b.byte_length + ${CID_BYTES} + ${varintLengthSql(`b.byte_length + ${CID_BYTES}`)}), 0) AS live_bytes
         FROM blocks b WHERE b.pack_id = p.id AND ${LIVE_BLOCK}
       ) s ON true
       WHERE p.id > $1 AND p.created_at < $2 AND s.live_blocks > 0 AND s.live_bytes < $3::float8 * (p.size_bytes - ${PACK_HEADER_BYTES})
       ORDER BY p.id LIMIT ${BATCH}`,
      [after, cutoff, opts.below],
    );
    if (rows.length === 0) break;
    after = Number(rows[rows.length - 1]!.id);
    for (const p of rows) {
      const live = await client.query<{ cid: Buffer; byte_offset: string; byte_length: number }>(
        `SELECT b.cid, b.byte_offset, b.byte_length FROM blocks b WHERE b.pack_id = $1 AND ${LIVE_BLOCK} ORDER BY b.byte_offset`,
        [p.id],
      );
      const bytes = await store.get(p.key);
      if (bytes === null) {
        out.skipped.push(`${p.key}: not in the blobstore`);
        continue;
      }
      const source: Source = { id: p.id, size: Number(p.size_bytes), blocks: [] };
      const data: Uint8Array[] = [];
      let bad: string | undefined;
      for (const r of live.rows) {
        const offset = Number(r.byte_offset);
        const block = bytes.subarray(offset, offset + r.byte_length);
        if (block.length !== r.byte_length || !blockHashMatches(r.cid, block)) {
          bad = `${p.key}: block at offset ${offset} does not match its CID`;
          break;
        }
        source.blocks.push({ cid: r.cid, offset, length: r.byte_length });
        data.push(block);
      }
      if (bad) {
        out.skipped.push(bad);
        continue;
      }
      source.blocks.forEach((b, i) => writer.add(b.cid, data[i]!));
      group.push(source);
      if (writer.byteLength >= opts.targetBytes) await flush();
    }
  }
  await flush();
}
