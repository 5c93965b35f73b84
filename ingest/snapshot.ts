/**
 * A full verified repo decided compactly, when it is the only change to its repo in the batch
 * (every backfill): the repo's records (the verifier's `RecordList`) are merged in path order
 * with the stored ones (loaded as one row per repo), and what changes is a byte per record plus
 * the indexes of replaced and deleted stored records. Rows, events and refcounts are written
 * from that at write time, one record at a time, so no object per record is ever made.
 *
 * A repo with other changes in the same batch goes through `decideSnapshot` (decide.ts), whose
 * per-path view the later changes read.
 */
import type pg from 'pg';
import { CID_LENGTH, cidFromString } from '../atproto/cid.ts';
import { RecordList } from '../atproto/record-list.ts';
import type { VerifiedRepo } from '../atproto/verify.ts';
import type { ChangeOutcome, SnapshotChange } from './changes.ts';
import { accountEvent, dropView, landSnapshot, type DecideContext, type PendingEvent } from './decide.ts';
import { isNotNewer, type RepoView } from './view.ts';

/** A repo's stored records, in path byte order: paths, and their CIDs 36 bytes each. */
export interface StoredRecords {
  paths: string[];
  cids: Buffer;
}

const NONE: StoredRecords = { paths: [], cids: Buffer.alloc(0) };

/** What a snapshot changes, for the writes. */
export interface SnapshotPlan {
  kind: 'plan';
  did: string;
  rev: string;
  repo: VerifiedRepo;
  list: RecordList;
  /** The change's index in the batch (the owner of the blocks it adds). */
  owner: number;
  /** Per record: 0 nothing to write (unchanged, or not kept by the filter), 1 create, 2 update. */
  change: Uint8Array;
  /** Per record that is an update: the index in `stored` of the record it replaces. */
  prev: Int32Array | undefined;
  /** Indexes in `stored` of the records the repo no longer has. */
  deleted: number[];
  stored: StoredRecords;
  /** Block indexes of the commit and the MST nodes. */
  treeBlocks: number[];
  /** Written after the record events (an account that serves its repo again). */
  after: PendingEvent[];
  /** Only events are kept (ephemeral mode). */
  eventsOnly: boolean;
}

/** The records of `repo` as a `RecordList`: the verifier's, or made from `records` for a hand-made repo. */
export function recordListOf(repo: VerifiedRepo): RecordList {
  if (repo.recordList) return repo.recordList;
  const list = new RecordList(repo.blocks);
  const sorted = [...repo.records].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (const r of sorted) list.pushPath(r.path, r.collection, repo.blocks.indexOf(cidFromString(r.cid)!));
  return list;
}

function treeBlocksOf(repo: VerifiedRepo): number[] {
  const index = (cid: string) => {
    const i = repo.blocks.indexOf(cidFromString(cid) ?? new Uint8Array(CID_LENGTH));
    // verifyRepo guarantees every reachable block is present; a miss here is a bug, not bad input.
    if (i < 0) throw new Error(`verified repo ${repo.did} lacks block ${cid}`);
    return i;
  };
  return [index(repo.commitCid), ...(repo.mstNodeBlocks ?? repo.mstNodes.map(index))];
}

/**
 * Loads the stored records of `dids`, each repo's as one row (its paths joined, its CIDs
 * concatenated), in path byte order.
 */
export async function loadStoredRecords(tx: pg.ClientBase, dids: string[]): Promise<Map<string, StoredRecords>> {
  const out = new Map<string, StoredRecords>();
  if (dids.length === 0) return out;
  const { rows } = await tx.query<{ did: string; paths: string; cids: Buffer }>(
    `SELECT did, string_agg(collection || '/' || rkey, E'\\n' ORDER BY collection || '/' || rkey COLLATE "C") AS paths,
            string_agg(cid, ''::bytea ORDER BY collection || '/' || rkey COLLATE "C") AS cids
     FROM records WHERE did = ANY($1::text[]) GROUP BY did`,
    [dids],
  );
  for (const r of rows) {
    const paths = r.paths.split('\n');
    if (r.cids.length !== paths.length * CID_LENGTH) throw new Error(`stored records of ${r.did}: ${paths.length} paths but ${r.cids.length} bytes of CIDs`);
    out.set(r.did, inOrder({ paths, cids: r.cids }));
  }
  return out;
}

/** Byte order is JS string order for the ASCII paths the MST allows; anything else is sorted here. */
function inOrder(s: StoredRecords): StoredRecords {
  let sorted = true;
  for (let i = 1; i < s.paths.length && sorted; i++) sorted = s.paths[i - 1]! < s.paths[i]!;
  if (sorted) return s;
  const order = s.paths.map((_, i) => i).sort((a, b) => (s.paths[a]! < s.paths[b]! ? -1 : s.paths[a]! > s.paths[b]! ? 1 : 0));
  const cids = Buffer.alloc(s.cids.length);
  order.forEach((from, to) => s.cids.copy(cids, to * CID_LENGTH, from * CID_LENGTH, (from + 1) * CID_LENGTH));
  return { paths: order.map((i) => s.paths[i]!), cids };
}

/** `decideSnapshot` for a repo whose only change in the batch this is; `stored` is its record index. */
export function decideSnapshotPlan(ctx: DecideContext, view: RepoView, change: SnapshotChange, stored: StoredRecords = NONE): ChangeOutcome {
  const { repo } = change;
  const did = view.did;
  if (view.status === 'active' && isNotNewer(repo.rev, view.rev)) return { kind: 'skipped', did, rev: repo.rev, storedRev: view.rev };
  const list = recordListOf(repo);
  if (!ctx.filter.keepsRepo(list.collections())) {
    dropView(ctx, view, 'dropped', repo.rev, 'no record in a signal collection');
    return { kind: 'dropped', did, rev: repo.rev, reason: 'no record in a signal collection' };
  }
  const eventsOnly = ctx.ephemeral;
  if (eventsOnly) stored = NONE;
  const n = list.length;
  const m = stored.paths.length;
  const changeOf = new Uint8Array(n);
  const prev = m > 0 ? new Int32Array(n) : undefined;
  const deleted: number[] = [];
  const counts = new Map<string, number>();
  let created = 0;
  let updated = 0;
  let unchanged = 0;
  let kept = 0;
  let collection: string | undefined;
  let keep = true;
  let inCollection = 0;
  let j = 0;
  for (let i = 0; i < n; i++) {
    const c = list.collectionAt(i);
    if (c !== collection) {
      if (collection !== undefined && inCollection > 0) counts.set(collection, inCollection);
      collection = c;
      keep = ctx.filter.keeps(c);
      inCollection = 0;
    }
    if (!keep) continue;
    kept++;
    inCollection++;
    if (m === 0) {
      changeOf[i] = 1;
      created++;
      continue;
    }
    const path = list.pathAt(i);
    while (j < m && stored.paths[j]! < path) deleted.push(j++);
    if (j < m && stored.paths[j] === path) {
      if (sameCid(list.cidBytesAt(i), stored.cids, j * CID_LENGTH)) unchanged++;
      else {
        changeOf[i] = 2;
        prev![i] = j;
        updated++;
      }
      j++;
    } else {
      changeOf[i] = 1;
      created++;
    }
  }
  if (collection !== undefined && inCollection > 0) counts.set(collection, inCollection);
  while (j < m) deleted.push(j++);

  const treeBlocks = treeBlocksOf(repo);
  const after: PendingEvent[] = [];
  // An account that was gone or deleted and serves its repo again: the event log says so, as
  // it said when the account went.
  if (view.status === 'gone' || view.status === 'deleted') after.push(accountEvent(did, repo.rev, { status: 'active', was: view.status }));
  const plan: SnapshotPlan = { kind: 'plan', did, rev: repo.rev, repo, list, owner: ctx.current, change: changeOf, prev, deleted, stored, treeBlocks, after, eventsOnly };
  ctx.writes.events.push(plan);
  landSnapshot(view, change, { recordsCount: eventsOnly ? 0 : kept, blocksCount: treeBlocks.length + kept, counts: eventsOnly ? undefined : counts, recount: eventsOnly });
  return { kind: 'imported', did, rev: repo.rev, created, updated, deleted: eventsOnly ? 0 : deleted.length, unchanged };
}

function sameCid(a: Uint8Array, b: Uint8Array, at: number): boolean {
  for (let i = 0; i < CID_LENGTH; i++) if (a[i] !== b[at + i]) return false;
  return true;
}
