/**
 * Repo: the `repos` row, and with it (in one read-only REPEATABLE READ transaction, so the walk
 * sees one consistent state of the repo: its head is read once) the record index, the event log
 * and the block index of the packs that hold most of the repo's blocks — the packs of its own
 * imports — so that the blocks below it are located without a lookup each. Steps to its head
 * commit, its record rows and its events.
 *
 * Repos are read a batch of roots at a time (`repo-batch.ts`), the bulk reads packed
 * (`packed.ts`): one row per collection, one per repo for the events, one per pack.
 */
import type { NodeOf, OutEdge } from '../nodes.ts';
import type { RepoWants } from '../repo-batch.ts';
import type { StepContext, StepResult } from './context.ts';

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
  if (row) {
    if (row.headCid && data.headLoc && ctx.wants('RepoToCommit')) {
      edges.push({
        type: 'RepoToCommit',
        node: { type: 'Commit', cid: row.headCid, loc: data.headLoc, repo: { did: row.did, rev: row.rev, dataCid: row.dataCid, signingKey: row.signingKey } },
      });
    }
    if (data.records && ctx.wants('RepoToRecordRow')) {
      for (const r of data.records) {
        edges.push({
          type: 'RepoToRecordRow',
          node: { type: 'RecordRow', did: row.did, collection: r.collection, rkey: r.rkey, row: { cid: r.cid } },
          path: `${r.collection}/${r.rkey}`,
        });
      }
    }
    if (data.events) {
      for (const e of data.events) {
        edges.push({
          type: 'RepoToEvent',
          node: { type: 'Event', id: e.id, row: { did: row.did, kind: e.kind, collection: e.collection, rkey: e.rkey, cid: e.cid } },
          ...(e.collection !== null && e.rkey !== null ? { path: `${e.collection}/${e.rkey}` } : {}),
        });
      }
    }
  }
  return { data, edges, bytes: 0 };
}
