/**
 * Refreshing a repo no subscription covers: one small request (`getLatestCommit`) tells whether
 * its rev moved; only then `getRepo?since=<stored rev>` fetches the blocks new since, and the new
 * tree is diffed against the stored one using those blocks plus the blocks already in the mirror
 * (the diff descends only where subtrees differ). The result is stored as exact creates, updates
 * and deletes through the shared store path, as a commit made on the stored rev. When the tree
 * cannot be completed, or anything does not add up, the caller falls back to a full backfill.
 */
import { z } from 'zod';
import { MemoryBlockStore, NodeStore, OverlayBlockStore, DeltaType, mstDiff, recordDiff, type ReadonlyBlockStore, type BlockMap } from '@atcute/mst';
import type pg from 'pg';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { locateBlock, readBlock } from '../storage/packs.ts';
import { readCar } from '../atproto/car.ts';
import { cidFromString, cidToString } from '../atproto/cid.ts';
import { readCommit, verifyCommitSignature } from '../atproto/commit.ts';
import { InvalidRepoError } from '../atproto/errors.ts';
import { getRepoBytes, type HttpOptions } from '../atproto/net/index.ts';
import { readJson, xrpcGet } from '../atproto/net/xrpc.ts';
import type { CommitOp } from '../ingest/changes.ts';
import { storeBatch, type StoreDeps } from '../ingest/store.ts';
import type { FilterOptions } from '../backfill/filters.ts';
import { recordFilter } from '../backfill/import.ts';

export interface StoredHead {
  did: string;
  rev: string;
  /** The stored data root (base32 CID). */
  dataCid: string;
  pds: string;
  signingKey: string;
}

export type RefreshOutcome =
  | { did: string; kind: 'unchanged'; rev: string }
  | { did: string; kind: 'refreshed'; rev: string; since: string; created: number; updated: number; deleted: number }
  /** The incremental path cannot be taken; a full backfill must. */
  | { did: string; kind: 'needs-backfill'; reason: string };

const latestCommitSchema = z.object({ cid: z.string(), rev: z.string() });

export async function getLatestCommit(pds: string, did: string, opts: HttpOptions): Promise<{ cid: string; rev: string }> {
  const nsid = 'com.atproto.sync.getLatestCommit';
  const res = await xrpcGet(pds, nsid, { did }, { ...opts, maxBytes: 64 * 1024 });
  return readJson(res, latestCommitSchema, `${nsid} on ${res.host}`);
}

/** Blocks of the mirror, read from their packs (hash-checked), as an MST block store. */
class MirrorBlockStore implements ReadonlyBlockStore {
  readonly #db: pg.Pool;
  readonly #blobs: BlobStore;
  constructor(db: pg.Pool, blobs: BlobStore) {
    this.#db = db;
    this.#blobs = blobs;
  }
  async get(cid: string): Promise<Uint8Array<ArrayBuffer> | null> {
    const bytes = cidFromString(cid);
    if (!bytes) return null;
    const loc = await locateBlock(this.#db, bytes);
    if (!loc) return null;
    return (await readBlock(this.#blobs, loc.packKey, loc.offset, loc.length, bytes)) as Uint8Array<ArrayBuffer>;
  }
  async getMany(cids: string[]): Promise<{ found: BlockMap; missing: string[] }> {
    const found: BlockMap = new Map();
    const missing: string[] = [];
    for (const c of cids) {
      const b = await this.get(c);
      if (b) found.set(c, b);
      else missing.push(c);
    }
    return { found, missing };
  }
  async has(cid: string): Promise<boolean> {
    const bytes = cidFromString(cid);
    return bytes !== undefined && (await locateBlock(this.#db, bytes)) !== null;
  }
}

export async function refreshRepo(
  deps: StoreDeps,
  head: StoredHead,
  opts: { filter: FilterOptions; ephemeralRetentionSeconds?: number | undefined; http: HttpOptions; maxCarBytes: number },
): Promise<RefreshOutcome> {
  const { did } = head;
  const latest = await getLatestCommit(head.pds, did, opts.http);
  if (latest.rev === head.rev) return { did, kind: 'unchanged', rev: head.rev };
  const car = await getRepoBytes(head.pds, did, { ...opts.http, since: head.rev, maxBytes: opts.maxCarBytes });
  let parsed;
  let commit;
  try {
    parsed = readCar(car, { maxBytes: opts.maxCarBytes });
    commit = readCommit(parsed.blocks, parsed.root, did);
    await verifyCommitSignature(commit, parsed.root, head.signingKey);
  } catch (err) {
    if (err instanceof InvalidRepoError) return { did, kind: 'needs-backfill', reason: `the since-CAR: ${err.message}` };
    throw err;
  }
  if (commit.rev <= head.rev) return { did, kind: 'unchanged', rev: head.rev };
  const fresh: BlockMap = new Map();
  for (const [cid, bytes] of parsed.blocks) fresh.set(cid, bytes as Uint8Array<ArrayBuffer>);
  const mirror = new MirrorBlockStore(deps.pool, deps.blobs);
  const ns = new NodeStore(new OverlayBlockStore(new MemoryBlockStore(fresh), mirror as never));
  const ops: CommitOp[] = [];
  let created: Set<string>;
  try {
    const [c, d] = await mstDiff(ns, head.dataCid, commit.data);
    created = c;
    for await (const delta of recordDiff(ns, c, d)) {
      const slash = delta.path.indexOf('/');
      const action = delta.deltaType === DeltaType.CREATED ? 'create' : delta.deltaType === DeltaType.UPDATED ? 'update' : 'delete';
      ops.push({ action, collection: delta.path.slice(0, slash), rkey: delta.path.slice(slash + 1), cid: delta.laterValue?.$link ?? null, prev: delta.priorValue?.$link ?? null });
    }
  } catch (err) {
    return { did, kind: 'needs-backfill', reason: `the new tree cannot be completed from the since-CAR and the mirror: ${(err as Error).message}` };
  }
  // A new record version the since-CAR leaves out is one the mirror holds already (a record
  // restored to an earlier version); its bytes come from the mirror.
  const blocks = new Map<string, Uint8Array>(fresh);
  for (const op of ops) {
    if (op.cid === null || blocks.has(op.cid)) continue;
    const b = await mirror.get(op.cid);
    if (!b) return { did, kind: 'needs-backfill', reason: `record block ${op.cid} is neither in the since-CAR nor in the mirror` };
    blocks.set(op.cid, b);
  }
  const result = await storeBatch(
    deps,
    [{
      kind: 'commit', did, rev: commit.rev, since: head.rev, commitCid: parsed.root, dataCid: commit.data, prevData: head.dataCid,
      ops, blocks, mstNodes: [...created].filter((c) => fresh.has(c)),
    }],
    { filter: recordFilter(opts.filter), ephemeralRetentionSeconds: opts.ephemeralRetentionSeconds, origin: 'live' },
  );
  const o = result.outcomes[0]!;
  switch (o.kind) {
    case 'imported':
      return { did, kind: 'refreshed', rev: o.rev, since: head.rev, created: o.created, updated: o.updated, deleted: o.deleted };
    case 'skipped':
      return { did, kind: 'unchanged', rev: o.storedRev };
    case 'gap':
      return { did, kind: 'needs-backfill', reason: o.reason };
    default:
      return { did, kind: 'needs-backfill', reason: `store answered ${o.kind}` };
  }
}

/** The stored head of `did` for a refresh, or undefined when it has none to refresh from. */
export async function storedHead(pool: pg.Pool, did: string): Promise<StoredHead | undefined> {
  const { rows } = await pool.query<{ rev: string | null; data_cid: Buffer | null; pds: string | null; signing_key: string | null; status: string }>(
    'SELECT rev, data_cid, pds, signing_key, status FROM repos WHERE did = $1',
    [did],
  );
  const r = rows[0];
  if (!r || r.status !== 'active' || !r.rev || !r.data_cid || !r.pds || !r.signing_key) return undefined;
  return { did, rev: r.rev, dataCid: cidToString(r.data_cid, 0), pds: r.pds, signingKey: r.signing_key };
}
