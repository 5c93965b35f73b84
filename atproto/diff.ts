/**
 * What changed between the stored record index of a repo and the repo as fetched: records
 * created, updated (same path, new CID), deleted (stored, no longer in the repo), unchanged.
 *
 * Both sides in path order make it one linear merge that holds nothing but its output, and the
 * generator form holds not even that, so a store can page through its index with a cursor.
 * Path order is byte order of `collection/rkey` — the MST's order, in which `verifyRepo` gives
 * its records. Note that it is not `ORDER BY collection, rkey`: '-' and '.' sort before '/', so
 * `a.b.c-d/x` comes before `a.b.c/y`. In PostgreSQL: `ORDER BY collection || '/' || rkey COLLATE "C"`.
 */
import { Buffer } from 'node:buffer';

export interface RecordRef {
  collection: string;
  rkey: string;
  cid: string;
  /** `collection/rkey`, if the caller has it already. */
  path?: string;
}

export type RecordChange =
  | { kind: 'create'; collection: string; rkey: string; cid: string }
  | { kind: 'update'; collection: string; rkey: string; cid: string; prev: string }
  | { kind: 'delete'; collection: string; rkey: string; prev: string };

export interface RecordDiff {
  creates: RecordRef[];
  updates: (RecordRef & { prev: string })[];
  deletes: RecordRef[];
  unchanged: number;
}

/**
 * The changes from `stored` to `current`, in path order; returns the count of unchanged records.
 *
 * @throws Error either side is not strictly ascending in path order (a caller's bug: a merge of
 *   unsorted input would report wrong changes, so it stops instead)
 */
export function* diffRecordStream(stored: Iterable<RecordRef>, current: Iterable<RecordRef>): Generator<RecordChange, number> {
  const old = ordered(stored, 'stored');
  const now = ordered(current, 'current');
  let a = old.next();
  let b = now.next();
  let unchanged = 0;
  while (!a.done || !b.done) {
    const cmp = a.done ? 1 : b.done ? -1 : compare(a.value.path, b.value.path);
    if (cmp < 0) {
      const { collection, rkey, cid } = a.value!.record;
      yield { kind: 'delete', collection, rkey, prev: cid };
      a = old.next();
    } else if (cmp > 0) {
      const { collection, rkey, cid } = b.value!.record;
      yield { kind: 'create', collection, rkey, cid };
      b = now.next();
    } else {
      const { collection, rkey, cid } = b.value!.record;
      const prev = a.value!.record.cid;
      if (prev === cid) unchanged++;
      else yield { kind: 'update', collection, rkey, cid, prev };
      a = old.next();
      b = now.next();
    }
  }
  return unchanged;
}

/**
 * `diffRecordStream` collected. `stored` may instead be a map of path → CID, for a caller that
 * holds the index unordered; then only `current` needs to be in order, and deletes come in the
 * map's order.
 */
export function diffRecords(stored: Iterable<RecordRef> | ReadonlyMap<string, string>, current: Iterable<RecordRef>): RecordDiff {
  const diff: RecordDiff = { creates: [], updates: [], deletes: [], unchanged: 0 };
  if (stored instanceof Map) return diffAgainstMap(stored as ReadonlyMap<string, string>, current, diff);
  const changes = diffRecordStream(stored as Iterable<RecordRef>, current);
  for (let step = changes.next(); ; step = changes.next()) {
    if (step.done) {
      diff.unchanged = step.value;
      return diff;
    }
    const c = step.value;
    if (c.kind === 'create') diff.creates.push({ collection: c.collection, rkey: c.rkey, cid: c.cid });
    else if (c.kind === 'update') diff.updates.push({ collection: c.collection, rkey: c.rkey, cid: c.cid, prev: c.prev });
    else diff.deletes.push({ collection: c.collection, rkey: c.rkey, cid: c.prev });
  }
}

function diffAgainstMap(stored: ReadonlyMap<string, string>, current: Iterable<RecordRef>, diff: RecordDiff): RecordDiff {
  const seen = new Set<string>();
  for (const { record, path } of ordered(current, 'current')) {
    seen.add(path);
    const prev = stored.get(path);
    const { collection, rkey, cid } = record;
    if (prev === undefined) diff.creates.push({ collection, rkey, cid });
    else if (prev !== cid) diff.updates.push({ collection, rkey, cid, prev });
    else diff.unchanged++;
  }
  for (const [path, cid] of stored) {
    if (seen.has(path)) continue;
    const slash = path.indexOf('/');
    diff.deletes.push({ collection: path.slice(0, slash), rkey: path.slice(slash + 1), cid });
  }
  return diff;
}

/** The records with their paths, checking that they ascend strictly. */
function* ordered(records: Iterable<RecordRef>, side: string): Generator<{ record: RecordRef; path: string }> {
  let last: string | undefined;
  for (const record of records) {
    const path = record.path ?? `${record.collection}/${record.rkey}`;
    if (last !== undefined && compare(last, path) >= 0) {
      throw new Error(`diffRecords: ${side} records are not in path order: ${JSON.stringify(path)} after ${JSON.stringify(last)}`);
    }
    last = path;
    yield { record, path };
  }
}

/**
 * Byte order of paths. Valid paths are ASCII, where UTF-16 order is byte order; anything else
 * is compared as UTF-8, so a stored row that is not a valid path still merges consistently.
 */
function compare(a: string, b: string): number {
  if (a === b) return 0;
  if (isAscii(a) && isAscii(b)) return a < b ? -1 : 1;
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}
