/** Event: one entry of the event log. Steps to the record block it names (create, update), when that is indexed. */
import { toLoc } from '../blocks.ts';
import type { NodeOf, OutEdge } from '../nodes.ts';
import type { StepContext, StepData, StepResult } from './context.ts';
import type { MaybePromise } from '../maybe-promise.ts';

/** `path` is the event's own (`collection/rkey`) when the Repo step found it: not built again. */
export function stepEvent(node: NodeOf<'Event'>, ctx: StepContext, path: string | undefined): MaybePromise<StepResult<'Event'>> {
  const h = node.row;
  if (!h) return readRow(ctx, node.id).then((row) => result(row, ctx, path));
  const cid = h.cid;
  if (!cid) return result({ did: h.did, kind: h.kind, collection: h.collection, rkey: h.rkey, cid, loc: null }, ctx, path);
  const loc = ctx.scope.locations.get(cid);
  if (loc) return result({ did: h.did, kind: h.kind, collection: h.collection, rkey: h.rkey, cid, loc }, ctx, path);
  return ctx.blocks.locate(cid).then((found) => result({ did: h.did, kind: h.kind, collection: h.collection, rkey: h.rkey, cid, loc: found }, ctx, path));
}

function result(row: StepData['Event']['row'], ctx: StepContext, path: string | undefined): StepResult<'Event'> {
  const edges: OutEdge[] = [];
  if (row?.cid && row.loc && ctx.wants('EventToRecord')) {
    const edge: OutEdge = { type: 'EventToRecord', node: { type: 'Record', cid: row.cid, loc: row.loc } };
    if (row.collection !== null && row.rkey !== null) edge.path = path ?? `${row.collection}/${row.rkey}`;
    edges.push(edge);
  }
  return { data: { row }, edges, bytes: 0 };
}

async function readRow(ctx: StepContext, id: string): Promise<StepData['Event']['row']> {
  const { rows } = await ctx.pool.query(
    `SELECT e.did, e.kind, e.collection, e.rkey, e.cid, b.pack_id, p.key, p.size_bytes, b.byte_offset, b.byte_length, b.refcount
     FROM events e LEFT JOIN blocks b ON b.cid = e.cid LEFT JOIN packs p ON p.id = b.pack_id
     WHERE e.id = $1`,
    [id],
  );
  const r = rows[0];
  return r ? { did: r.did, kind: r.kind, collection: r.collection, rkey: r.rkey, cid: r.cid, loc: r.pack_id === null ? null : toLoc(r) } : null;
}
