/**
 * CAR plans (`repo_car_plans`, migration 0006): what the getRepo CAR of a repo's head is made
 * of — the CAR header and the commit block as bytes, then ranges of pack bytes (blocks framed as
 * a CAR frames them), each with the CRC-32 of its bytes — so that a server answers getRepo with
 * one query and a few ranged reads, no tree walk and no per-block hash.
 *
 * Written by serve the first time it walks a head, and by the store path for a repo stored
 * whole in a pack of its own (a first import: the pack holds exactly the blocks the head reaches,
 * so the plan is the pack's bytes minus its header and the commit's frame). One plan per repo,
 * replaced when a newer one is written; read only for the repo's current head and only while
 * every pack it names has its `packs` row (a pack row deleted takes its link rows with it).
 */
import { crc32 } from 'node:zlib';
import * as CBOR from '@atcute/cbor';
import { CidLinkWrapper } from '@atcute/cid';
import type { Queryable } from './db/pool.ts';
import { PACK_HEADER_BYTES, varintLength, writeVarint, type LaidOutPack } from './packs.ts';
import type { ByteSource } from './blobstore/types.ts';
import { SOURCE_CHUNK_BYTES } from './blobstore/checks.ts';

/** A piece of a stored plan: bytes of its own, or a range of a pack with its CRC-32. */
export type StoredPiece = { bytes: Uint8Array } | PackRange;
export interface PackRange {
  /** Index in {@link StoredPlan.packKeys}. */
  pack: number;
  start: number;
  end: number;
  crc: number;
}

export interface StoredPlan {
  /** Blobstore keys of the packs the ranges read, by the `pack` ordinal of a piece. */
  packKeys: string[];
  pieces: StoredPiece[];
}

/**
 * The most bytes one range covers: one ranged read, one CRC, and one buffer of the server's
 * shared read buffers (serve/repo-car.ts; a cold request holds three). Cold getRepo of a 31.2 MB
 * CAR on 2 loaded cores (`node bench/run.ts --only serve`, medians of five requests, server
 * CPU): 1 MiB ranges 36 ms, 2 MiB 33 ms, 4 MiB 22 ms, 8 MiB 28 ms — each range costs a
 * read's open and close, a CRC call, a chunked write and its drain besides its bytes; 4 MiB
 * keeps that small and the buffers few. Not the whole pack, so a reader sends one range while
 * it reads the next. Plans stored with other sizes (16 MiB before) are read as they are.
 */
export const RANGE_MAX = 4 * 1024 * 1024;

/**
 * CARs smaller than this get no stored plan: walking them costs a few milliseconds, and a
 * full-network mirror is mostly such repos (a row each would be ~40 million rows for little).
 */
export const PLAN_MIN_BYTES = 256 * 1024;

/** The CARv1 header naming `root`, framed. */
export function carHeader(root: Uint8Array): Uint8Array {
  const header = CBOR.encode({ version: 1, roots: [new CidLinkWrapper(root)] });
  const out = Buffer.allocUnsafe(varintLength(header.length) + header.length);
  out.set(header, writeVarint(out, 0, header.length));
  return out;
}

const VERSION = 1;
const OWN = 0;
const RANGE = 1;

/** The plan as bytes: version, count, then per piece its kind and fields (big-endian). */
export function encodePlan(pieces: StoredPiece[]): Buffer {
  let size = 5;
  for (const p of pieces) size += 'bytes' in p ? 5 + p.bytes.length : 19;
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

/**
 * `[start, end)` of `pack` as ranges of at most {@link RANGE_MAX} bytes, each with its CRC, read
 * from `bytes` a piece at a time into `scratch`.
 */
export function rangesOf(bytes: ByteSource, pack: number, start: number, end: number, scratch: Uint8Array): PackRange[] {
  const out: PackRange[] = [];
  for (let at = start; at < end; at += RANGE_MAX) {
    const to = Math.min(end, at + RANGE_MAX);
    let crc = 0;
    for (let p = at; p < to; p += scratch.length) {
      const piece = to - p < scratch.length ? scratch.subarray(0, to - p) : scratch;
      bytes.read(p, piece);
      crc = crc32(piece, crc);
    }
    out.push({ pack, start: at, end: to, crc });
  }
  return out;
}

/**
 * Writes `did`'s plan for `head`, replacing the repo's plan, unless `head` is not the repo's
 * head in what `db` sees (then nothing is written). False when nothing was written; throws
 * {@link IncompleteCarPlanError} when a pack it names has no row (the caller rolls back).
 */
export async function writeCarPlan(db: Queryable, did: string, head: Uint8Array, plan: StoredPlan): Promise<boolean> {
  await db.query('DELETE FROM repo_car_plans WHERE did = $1', [did]);
  const inserted = await db.query(
    `INSERT INTO repo_car_plans (did, head_cid, pack_count, pieces)
     SELECT did, head_cid, $3, $4 FROM repos WHERE did = $1 AND head_cid = $2`,
    [did, head, plan.packKeys.length, encodePlan(plan.pieces)],
  );
  if (inserted.rowCount !== 1) return false;
  const linked = await db.query(
    `INSERT INTO repo_car_plan_packs (did, ord, pack_id)
     SELECT $1, k.ord - 1, p.id FROM unnest($2::text[]) WITH ORDINALITY AS k(key, ord) JOIN packs p ON p.key = k.key`,
    [did, plan.packKeys],
  );
  if (linked.rowCount !== plan.packKeys.length) throw new IncompleteCarPlanError(`a pack of the CAR plan of ${did} has no row`);
  return true;
}

/** A pack a plan names lost its row before the plan was written. */
export class IncompleteCarPlanError extends Error {
  override name = 'IncompleteCarPlanError';
}

/**
 * The plan of a repo whose blocks are exactly the blocks of `pack` (a first import stored
 * alone): the header and the commit, then the pack's frames but the commit's, in pack order —
 * the CAR a walk of the head sends. Null when `head` is not in the pack, or the pack is smaller
 * than `minBytes`.
 */
export function packCarPlan(head: Uint8Array, pack: LaidOutPack, minBytes = PLAN_MIN_BYTES): StoredPlan | null {
  const { size, offsets, lengths } = pack;
  if (size < minBytes) return null;
  const commit = pack.indexOf(head);
  if (commit < 0) return null;
  const frameStart = (i: number) => offsets[i]! - 36 - varintLength(36 + lengths[i]!);
  // The frames follow the header in whatever order the layout chose; the plan sends them so.
  const first = PACK_HEADER_BYTES;
  const commitStart = frameStart(commit);
  const commitEnd = offsets[commit]! + lengths[commit]!;
  const header = carHeader(head);
  const own = Buffer.allocUnsafe(header.length + (commitEnd - commitStart));
  own.set(header, 0);
  pack.read(commitStart, own.subarray(header.length));
  const scratch = new Uint8Array(Math.min(SOURCE_CHUNK_BYTES, size));
  return { packKeys: [pack.key], pieces: [{ bytes: own }, ...rangesOf(pack, 0, first, commitStart, scratch), ...rangesOf(pack, 0, commitEnd, size, scratch)] };
}

/** Writes the plan of a repo whose blocks are exactly `pack`'s (see {@link packCarPlan}). */
export async function writePackCarPlan(db: Queryable, did: string, head: Uint8Array, pack: LaidOutPack): Promise<void> {
  const plan = packCarPlan(head, pack);
  if (plan) await writeCarPlan(db, did, head, plan);
}
