/**
 * Decides each change of a batch against its repo's view (see view.ts), in order: its outcome,
 * the events it adds, the blocks it needs stored, and the view after it. Nothing here touches
 * the database; a change that does not follow the view (a replay, a gap, a filtered repo) leaves
 * the view as it was, so one repo's trouble never changes another's outcome.
 */
import { cidBytes } from '../atproto/cid.ts';
import type { AccountChange, ChangeOutcome, CommitChange, IdentityChange, RecordFilter, SnapshotChange } from './changes.ts';
import type { SnapshotPlan } from './snapshot.ts';
import { isNotNewer, type RepoView } from './view.ts';

export interface PendingEvent {
  did: string;
  kind: 'create' | 'update' | 'delete' | 'account' | 'identity';
  collection: string | null;
  rkey: string | null;
  cid: Buffer | null;
  prev: Buffer | null;
  rev: string | null;
  detail: string | null;
}

/** What the decided changes add, across the batch. */
export interface BatchWrites {
  /** In the order they are written; a plan stands for all the events of its snapshot. */
  events: (PendingEvent | SnapshotPlan)[];
  /** Blocks that may be missing from the index: base32 CID → bytes. */
  candidates: Map<string, Uint8Array>;
  /** Which change first needed each candidate (its index in the batch), for per-change counts. */
  owner: Map<string, number>;
}

export interface DecideContext {
  filter: RecordFilter;
  ephemeral: boolean;
  /** Whether signal collections are configured (filter mode drops repos without them). */
  hasSignal: boolean;
  writes: BatchWrites;
  /** Index of the change being decided. */
  current: number;
}

function addBlock(ctx: DecideContext, cid: string, data: Uint8Array): void {
  if (ctx.writes.candidates.has(cid)) return;
  ctx.writes.candidates.set(cid, data);
  ctx.writes.owner.set(cid, ctx.current);
}

export function decideSnapshot(ctx: DecideContext, view: RepoView, change: SnapshotChange): ChangeOutcome {
  const { repo } = change;
  const did = view.did;
  if (view.status === 'active' && isNotNewer(repo.rev, view.rev)) return { kind: 'skipped', did, rev: repo.rev, storedRev: view.rev };
  if (!ctx.filter.keepsRepo(new Set(repo.records.map((r) => r.collection)))) {
    dropView(ctx, view, 'dropped', repo.rev, 'no record in a signal collection');
    return { kind: 'dropped', did, rev: repo.rev, reason: 'no record in a signal collection' };
  }
  let created = 0;
  let updated = 0;
  let deleted = 0;
  let unchanged = 0;
  const seen = new Set<string>();
  const events: PendingEvent[] = [];
  for (const rec of repo.records) {
    if (!ctx.filter.keeps(rec.collection)) continue;
    const cid = cidBytes(rec.cid);
    if (ctx.ephemeral) {
      events.push(recordEvent(did, 'create', rec.collection, rec.rkey, cid, null, repo.rev));
      addBlock(ctx, rec.cid, repo.blocks.get(rec.cid)!);
      created++;
      continue;
    }
    seen.add(rec.path);
    let slot = view.records.get(rec.path);
    if (!slot) view.records.set(rec.path, (slot = { collection: rec.collection, rkey: rec.rkey, orig: null, cur: null }));
    if (slot.cur === null) {
      events.push(recordEvent(did, 'create', rec.collection, rec.rkey, cid, null, repo.rev));
      created++;
    } else if (!slot.cur.equals(cid)) {
      events.push(recordEvent(did, 'update', rec.collection, rec.rkey, cid, slot.cur, repo.rev));
      updated++;
    } else {
      unchanged++;
      continue;
    }
    slot.cur = cid;
    // verifyRepo guarantees every reachable block is present; a miss here is a bug, not bad input.
    const data = repo.blocks.get(rec.cid);
    if (!data) throw new Error(`verified repo ${did} lacks block ${rec.cid}`);
    addBlock(ctx, rec.cid, data);
  }
  if (!ctx.ephemeral) {
    for (const [path, slot] of view.records) {
      if (slot.cur === null || seen.has(path)) continue;
      events.push(recordEvent(did, 'delete', slot.collection, slot.rkey, null, slot.cur, repo.rev));
      slot.cur = null;
      deleted++;
    }
  }
  // Only the commit, the MST nodes and new record versions can be missing from the index: an
  // unchanged record's block is held by its row (refcount ≥ 1), which GC never sweeps.
  for (const c of [repo.commitCid, ...repo.mstNodes]) {
    const data = repo.blocks.get(c);
    if (!data) throw new Error(`verified repo ${did} lacks block ${c}`);
    addBlock(ctx, c, data);
  }
  // An account that was gone or deleted and serves its repo again: the event log says so, as
  // it said when the account went.
  if (view.status === 'gone' || view.status === 'deleted') {
    events.push(accountEvent(did, repo.rev, { status: 'active', was: view.status }));
  }
  ctx.writes.events.push(...events);
  let keptBlocks = 1 + repo.mstNodes.length;
  for (const rec of repo.records) if (ctx.filter.keeps(rec.collection)) keptBlocks++;
  landSnapshot(view, change, { recordsCount: ctx.ephemeral ? 0 : countLive(view), blocksCount: keptBlocks, recount: true });
  return { kind: 'imported', did, rev: repo.rev, created, updated, deleted, unchanged };
}

/**
 * The repo's state once a snapshot lands (either way of deciding it): active at the snapshot's
 * head, identity from the change, its counts, resync cleared; `counts` are the rest of the view.
 */
export function landSnapshot(view: RepoView, change: SnapshotChange, counts: Pick<RepoView, 'recordsCount' | 'blocksCount' | 'recount'> & Partial<Pick<RepoView, 'counts'>>): void {
  const { repo } = change;
  Object.assign(view, {
    status: 'active',
    goneStatus: null,
    rev: repo.rev,
    head: cidBytes(repo.commitCid),
    data: cidBytes(repo.dataCid),
    pds: change.pds,
    handle: change.handle ?? null,
    signingKey: change.signingKey,
    lastError: null,
    dirty: true,
    clearResync: true,
    imported: true,
    ...counts,
  });
}

export function decideCommit(ctx: DecideContext, view: RepoView, change: CommitChange): ChangeOutcome {
  const did = view.did;
  const gap = (reason: string): ChangeOutcome => ({ kind: 'gap', did, rev: change.rev, storedRev: view.rev, reason });
  if (view.status === 'dropped' && ctx.hasSignal) {
    // A filtered-out repo stays out until a record of a signal collection arrives; then the
    // whole repo is wanted, which only a backfill can give.
    const signal = change.ops.some((op) => op.action !== 'delete' && ctx.filter.keepsRepo([op.collection]));
    if (!signal) return { kind: 'dropped', did, rev: change.rev, reason: 'no record in a signal collection' };
    return gap('a record of a signal collection arrived for a repo dropped by the filter');
  }
  // A repo's first commit (no `since`) on a repo this mirror has never held starts it from the
  // empty tree; any other commit for a repo not held is a gap that only a backfill fills.
  const fresh = view.head === null && view.rev === null && view.status === 'pending' && change.since === null;
  if (!fresh && (view.head === null || view.rev === null || view.status !== 'active')) return gap(`repo not mirrored (status ${view.status})`);
  if (isNotNewer(change.rev, view.rev)) return { kind: 'skipped', did, rev: change.rev, storedRev: view.rev };
  if (!fresh && change.since !== view.rev) return gap(`since ${change.since ?? 'null'} is not the stored rev ${view.rev}`);
  if (change.prevData !== undefined && view.data !== null && !cidBytes(change.prevData).equals(view.data)) {
    return gap(`prevData ${change.prevData} is not the stored data root`);
  }
  const kept = change.ops.filter((op) => ctx.filter.keeps(op.collection));
  if (!ctx.ephemeral) {
    for (const op of kept) {
      const slot = view.records.get(`${op.collection}/${op.rkey}`);
      const cur = slot?.cur ?? null;
      if (op.action === 'create' ? cur !== null : cur === null || (op.prev !== null && !cur.equals(cidBytes(op.prev)))) {
        return gap(`${op.action} ${op.collection}/${op.rkey} disagrees with the stored record index`);
      }
    }
  }
  let created = 0;
  let updated = 0;
  let deleted = 0;
  for (const op of kept) {
    const cid = op.cid === null ? null : cidBytes(op.cid);
    let slot = ctx.ephemeral ? undefined : view.records.get(`${op.collection}/${op.rkey}`);
    // A view that holds every path (a snapshot came first in this batch) has no slot for a new one.
    if (!ctx.ephemeral && !slot) view.records.set(`${op.collection}/${op.rkey}`, (slot = { collection: op.collection, rkey: op.rkey, orig: null, cur: null }));
    const prev = slot ? slot.cur : op.prev === null ? null : cidBytes(op.prev);
    ctx.writes.events.push(recordEvent(did, op.action, op.collection, op.rkey, op.action === 'delete' ? null : cid, op.action === 'create' ? null : prev, change.rev));
    if (slot) slot.cur = op.action === 'delete' ? null : cid;
    if (op.cid !== null && op.action !== 'delete') {
      const data = change.blocks.get(op.cid);
      if (!data) throw new Error(`commit ${change.rev} of ${did} lacks the block of ${op.collection}/${op.rkey}`);
      addBlock(ctx, op.cid, data);
    }
    if (op.action === 'create') created++;
    else if (op.action === 'update') updated++;
    else deleted++;
  }
  for (const c of [change.commitCid, ...change.mstNodes]) {
    const data = change.blocks.get(c);
    if (!data) throw new Error(`commit ${change.rev} of ${did} lacks block ${c}`);
    addBlock(ctx, c, data);
  }
  if (change.identity?.replaces) {
    view.signingKey = change.identity.signingKey;
    view.pds = change.identity.pds ?? view.pds;
    view.handle = change.identity.handle ?? view.handle;
  } else if (change.identity) {
    view.signingKey ??= change.identity.signingKey;
    view.pds ??= change.identity.pds ?? null;
    view.handle ??= change.identity.handle ?? null;
  }
  Object.assign(view, {
    status: 'active',
    rev: change.rev,
    head: cidBytes(change.commitCid),
    data: cidBytes(change.dataCid),
    recordsCount: ctx.ephemeral ? 0 : view.recordsCount + created - deleted,
    lastError: null,
    dirty: true,
    clearResync: true,
    imported: true,
  });
  return { kind: 'imported', did, rev: change.rev, created, updated, deleted, unchanged: 0 };
}

const GONE = new Set(['deactivated', 'takendown', 'suspended']);

/** `#account`: the same states and account events backfill records for the same facts. */
export function decideAccount(ctx: DecideContext, view: RepoView, change: AccountChange): ChangeOutcome {
  const did = view.did;
  if (change.active) {
    // A repo not held yet (a new account) gets its data from its commits, or a gap's resync.
    if (view.status !== 'gone') return { kind: 'account', did, status: 'active', changed: false, needsBackfill: false };
    if (view.head === null) return { kind: 'account', did, status: 'active', changed: false, needsBackfill: true };
    ctx.writes.events.push(accountEvent(did, view.rev, { status: 'active', was: view.goneStatus ?? view.status }));
    Object.assign(view, { status: 'active', goneStatus: null, lastError: null, dirty: true, clearResync: true });
    return { kind: 'account', did, status: 'active', changed: true, needsBackfill: false };
  }
  const status = change.status ?? 'deactivated';
  if (status === 'deleted') {
    if (view.status === 'deleted') return { kind: 'account', did, status, changed: false, needsBackfill: false };
    dropView(ctx, view, 'deleted', undefined, 'account deleted (firehose)');
    return { kind: 'account', did, status, changed: true, needsBackfill: false };
  }
  if (!GONE.has(status)) {
    // A status this mirror has no state for (throttled, desynchronized, …): recorded, not acted on.
    ctx.writes.events.push(accountEvent(did, view.rev, { status, active: false }));
    return { kind: 'account', did, status, changed: false, needsBackfill: false };
  }
  if (view.status === 'gone' && view.goneStatus === status) return { kind: 'account', did, status, changed: false, needsBackfill: false };
  ctx.writes.events.push(accountEvent(did, view.rev, { status }));
  Object.assign(view, { status: 'gone', goneStatus: status, lastError: `account ${status} (firehose)`, dirty: true, clearResync: true });
  return { kind: 'account', did, status, changed: true, needsBackfill: false };
}

export function decideIdentity(ctx: DecideContext, view: RepoView, change: IdentityChange): ChangeOutcome {
  const detail: Record<string, string> = {};
  if (change.handle !== undefined) detail.handle = change.handle;
  if (change.pds !== undefined) detail.pds = change.pds;
  ctx.writes.events.push({ did: view.did, kind: 'identity', collection: null, rkey: null, cid: null, prev: null, rev: view.rev, detail: JSON.stringify(detail) });
  view.handle = change.handle ?? view.handle;
  view.pds = change.pds ?? view.pds;
  view.signingKey = change.signingKey ?? view.signingKey;
  view.dirty = true;
  return { kind: 'identity', did: view.did };
}

/**
 * The repo leaves the mirror (`dropped` by the filter, or `deleted`): its stored records, events
 * and head are released at write time; what this batch decided for it before is discarded.
 */
export function dropView(ctx: DecideContext, view: RepoView, status: 'dropped' | 'deleted', rev: string | undefined, reason: string): void {
  ctx.writes.events = ctx.writes.events.filter((e) => e.did !== view.did);
  for (const slot of view.records.values()) {
    slot.orig = null;
    slot.cur = null;
  }
  ctx.writes.events.push(accountEvent(view.did, rev ?? null, { status, reason }));
  Object.assign(view, {
    status, goneStatus: null, rev: null, head: null, data: null, origHead: null, recordsCount: 0, blocksCount: 0,
    lastError: reason, full: true, dirty: true, clearResync: true, imported: false, wipe: true, recount: true, counts: undefined,
  });
}

function countLive(view: RepoView): number {
  let n = 0;
  for (const s of view.records.values()) if (s.cur !== null) n++;
  return n;
}

function recordEvent(did: string, kind: 'create' | 'update' | 'delete', collection: string, rkey: string, cid: Buffer | null, prev: Buffer | null, rev: string): PendingEvent {
  return { did, kind, collection, rkey, cid, prev, rev, detail: null };
}

export function accountEvent(did: string, rev: string | null, detail: Record<string, string | boolean>): PendingEvent {
  return { did, kind: 'account', collection: null, rkey: null, cid: null, prev: null, rev, detail: JSON.stringify(detail) };
}
