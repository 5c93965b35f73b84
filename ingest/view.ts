/**
 * A repo as one batch sees it: the stored row, locked, and the records the batch's changes touch,
 * each with its stored CID (`orig`) and its CID after the changes applied so far (`cur`). The
 * changes are decided against the view, in order; the writes are the difference between the two.
 */
export interface RecordSlot {
  collection: string;
  rkey: string;
  /** As stored when the batch began; null when the record index holds no such path. */
  orig: Buffer | null;
  /** After the changes decided so far. */
  cur: Buffer | null;
}

export interface RepoView {
  did: string;
  status: string;
  goneStatus: string | null;
  rev: string | null;
  head: Buffer | null;
  data: Buffer | null;
  /** The head the stored row names (its reference is counted), until a drop releases it. */
  origHead: Buffer | null;
  pds: string | null;
  handle: string | null;
  signingKey: string | null;
  recordsCount: number;
  blocksCount: number;
  lastError: string | null;
  /** Paths (`collection/rkey`) loaded: every stored record when `full`, else those the changes touch. */
  records: Map<string, RecordSlot>;
  full: boolean;
  /** The row changes (written back at the end of the batch). */
  dirty: boolean;
  /** The resync state is cleared (a good copy landed, or the repo left the mirror). */
  clearResync: boolean;
  imported: boolean;
  /** Stored records, events and counts are deleted before the batch's writes (a drop). */
  wipe: boolean;
  /** collection_counts is recomputed from the records rather than adjusted. */
  recount: boolean;
  /** collection_counts is replaced by these (a snapshot decided compactly knows them). */
  counts?: Map<string, number> | undefined;
}

export interface StoredRow {
  did: string;
  status: string;
  gone_status: string | null;
  rev: string | null;
  head_cid: Buffer | null;
  data_cid: Buffer | null;
  pds: string | null;
  handle: string | null;
  signing_key: string | null;
  records_count: string;
  blocks_count: string;
  last_error: string | null;
}

export function viewOf(r: StoredRow): RepoView {
  return {
    did: r.did,
    status: r.status,
    goneStatus: r.gone_status,
    rev: r.rev,
    head: r.head_cid,
    data: r.data_cid,
    origHead: r.head_cid,
    pds: r.pds,
    handle: r.handle,
    signingKey: r.signing_key,
    recordsCount: Number(r.records_count),
    blocksCount: Number(r.blocks_count),
    lastError: r.last_error,
    records: new Map(),
    full: false,
    dirty: false,
    clearResync: false,
    imported: false,
    wipe: false,
    recount: false,
  };
}

/** Revs are TIDs: base32-sortable, so string order is time order. */
export function isNotNewer(rev: string, stored: string | null): stored is string {
  return stored !== null && rev <= stored;
}
