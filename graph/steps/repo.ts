/**
 * Repo: the `repos` row, and with it (in one read-only REPEATABLE READ transaction, so the walk
 * sees one consistent state of the repo: its head is read once) the record index, the event log
 * and the block index of the packs that hold most of the repo's blocks — the packs of its own
 * imports — so that the blocks below it are located without a lookup each. Steps to its head
 * commit, its record rows and its events; the rows and events as edges made a chunk at a time,
 * as the walk takes them (`RepoChildren`).
 *
 * Repos are read a batch of roots at a time (`repo-batch.ts`), the bulk reads packed
 * (`packed.ts`): one row per collection, one per repo for the events, one per pack.
 */
import type { NodeOf, OutEdge } from '../nodes.ts';
import type { RepoWants } from '../repo-batch.ts';
import type { PackedEvents, PackedRecords } from '../packed.ts';
import type { EdgeChunks, StepContext, StepResult } from './context.ts';

/** What the Repo step reads for each repo, given what the walk follows and its walk type needs. */
export function repoWants(wants: StepContext['wants'], needs: StepContext['needs']): RepoWants {
  return {
    records: wants('RepoToRecordRow') || needs.recordIndex,
    events: wants('RepoToEvent'),
    counts: needs.collectionCounts,
    // The packs' block index pays off when the walk goes below the head or to the records.
    locations: wants('RepoToCommit') || wants('RepoToRecordRow') || wants('RepoToEvent'),
    refcounts: needs.refcounts,
  };
}

export async function stepRepo(node: NodeOf<'Repo'>, ctx: StepContext): Promise<StepResult<'Repo'>> {
  const data = await ctx.repos.read(node.did, ctx.scope.locations);
  const edges: OutEdge[] = [];
  const row = data.row;
  if (!row) return { data, edges, bytes: 0 };
  if (row.headCid && data.headLoc && ctx.wants('RepoToCommit')) {
    edges.push({
      type: 'RepoToCommit',
      node: { type: 'Commit', cid: row.headCid, loc: data.headLoc, repo: { did: row.did, rev: row.rev, dataCid: row.dataCid, signingKey: row.signingKey } },
    });
  }
  const records = ctx.wants('RepoToRecordRow') ? data.recordRows : null;
  const events = data.events;
  if (!records?.length && !events?.length) return { data, edges, bytes: 0 };
  return { data, edges, bytes: 0, more: new RepoChildren(row.did, records, events) };
}

/** Edges made per pull: enough that a pull costs little beside the steps it feeds. */
export const CHILD_CHUNK = 1024;

/**
 * A repo's record rows, then its events, as edges made a chunk at a time from the end (the walk
 * takes the last first), unpacked from the packed rows as they go: the objects, edges and routes
 * of a repo's million records are never in memory together, only its packed rows.
 */
class RepoChildren implements EdgeChunks {
  readonly #did: string;
  #records: PackedRecords | null;
  #events: PackedEvents | null;
  /** The rows before these ends are still to come. */
  #recordsEnd: number;
  #eventsEnd: number;

  constructor(did: string, records: PackedRecords | null, events: PackedEvents | null) {
    this.#did = did;
    this.#records = records;
    this.#events = events;
    this.#recordsEnd = records?.length ?? 0;
    this.#eventsEnd = events?.length ?? 0;
  }

  get remaining(): number {
    return this.#recordsEnd + this.#eventsEnd;
  }

  next(): OutEdge[] | null {
    const did = this.#did;
    const out: OutEdge[] = [];
    if (this.#eventsEnd > 0) {
      const end = this.#eventsEnd;
      const from = Math.max(0, end - CHILD_CHUNK);
      for (const e of this.#events!.read(from, end)) {
        out.push({
          type: 'RepoToEvent',
          node: { type: 'Event', id: e.id, row: { did, kind: e.kind, collection: e.collection, rkey: e.rkey, cid: e.cid } },
          ...(e.collection !== null && e.rkey !== null ? { path: `${e.collection}/${e.rkey}` } : {}),
        });
      }
      this.#eventsEnd = from;
      // Their bytes go once every edge is made (a node's cid is a view of them until it is stepped).
      if (from === 0) this.#events = null;
      return out;
    }
    if (this.#recordsEnd > 0) {
      const end = this.#recordsEnd;
      const from = Math.max(0, end - CHILD_CHUNK);
      for (const r of this.#records!.read(from, end)) {
        out.push({
          type: 'RepoToRecordRow',
          node: { type: 'RecordRow', did, collection: r.collection, rkey: r.rkey, row: { cid: r.cid } },
          path: `${r.collection}/${r.rkey}`,
        });
      }
      this.#recordsEnd = from;
      if (from === 0) this.#records = null;
      return out;
    }
    return null;
  }
}
