/** Helpers for the maintenance tests: independent checks of the books GC and retention keep. */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { PackWriter, indexPack, putPack, readBlock, locateBlock, type FinishedPack } from '../storage/packs.ts';
import { cidFromString } from '../atproto/cid.ts';
import { cidFor, readCarBlocks } from '../atproto/testing/car-edit.ts';
import { refcountProblems } from './helpers.ts';

/** How many blocks' refcounts disagree with the references rows hold (0 when the books are right; at most 20). */
export async function refcountMismatches(db: pg.Pool): Promise<number> {
  return (await refcountProblems(db)).length;
}


/** A pack of `count` random raw blocks, nobody's. */
export function randomPack(count: number): FinishedPack {
  const w = new PackWriter();
  for (let i = 0; i < count; i++) {
    const data = randomBytes(64 + i);
    w.add(cidFromString(cidFor(data, 0x55))!, data);
  }
  return w.finish();
}

/** Stores and indexes `pack` (each block with `refcount`), as an import would, without any row referencing it. */
export async function storeLoosePack(db: pg.Pool, store: BlobStore, pack: FinishedPack, refcount = 0): Promise<number> {
  await putPack(store, pack);
  return (await indexPack(db, pack, () => refcount)).packId;
}

/**
 * Checks, without the walker, that every block of the given CARs (a repo as its PDS served it:
 * commit, MST nodes, records) and every block an event names is indexed and reads back with bytes
 * that hash to its CID. Returns the CIDs that are not.
 */
export async function unreadableBlocks(db: pg.Pool, store: BlobStore, cars: Uint8Array[]): Promise<string[]> {
  const cids = new Set<string>();
  for (const car of cars) for (const cid of readCarBlocks(car).blocks.keys()) cids.add(cid);
  const bad: string[] = [];
  const check = async (label: string, cid: Uint8Array) => {
    const loc = await locateBlock(db, cid);
    if (!loc) return bad.push(`${label}: not indexed`);
    try {
      await readBlock(store, loc.packKey, loc.offset, loc.length, cid);
    } catch (err) {
      bad.push(`${label}: ${(err as Error).message}`);
    }
  };
  for (const cid of cids) await check(cid, cidFromString(cid)!);
  const { rows } = await db.query<{ id: string; cid: Buffer }>('SELECT id, cid FROM events WHERE cid IS NOT NULL');
  for (const e of rows) await check(`event ${e.id}`, e.cid);
  return bad;
}
