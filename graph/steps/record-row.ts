/** RecordRow: one row of the record index. Steps to the record block it names, when that is indexed. */
import { toLoc } from '../blocks.ts';
import type { BlockLoc, NodeOf, OutEdge } from '../nodes.ts';
import type { StepContext, StepResult } from './context.ts';
import { andThen, type MaybePromise } from '../maybe-promise.ts';

export function stepRecordRow(node: NodeOf<'RecordRow'>, ctx: StepContext): MaybePromise<StepResult<'RecordRow'>> {
  const hint = node.row;
  if (!hint) return readRow(ctx, node).then((row) => result(node, row, ctx));
  const cid = hint.cid;
  return andThen(ctx.scope.locations.get(cid) ?? ctx.blocks.locate(cid), (loc) => result(node, { cid, loc }, ctx));
}

function result(node: NodeOf<'RecordRow'>, row: { cid: Uint8Array; loc: BlockLoc | null } | null, ctx: StepContext): StepResult<'RecordRow'> {
  const edges: OutEdge[] = [];
  if (row?.loc && ctx.wants('RecordRowToRecord')) {
    edges.push({ type: 'RecordRowToRecord', node: { type: 'Record', cid: row.cid, loc: row.loc }, path: `${node.collection}/${node.rkey}` });
  }
  return { data: { row }, edges, bytes: 0 };
}

async function readRow(ctx: StepContext, node: NodeOf<'RecordRow'>): Promise<{ cid: Uint8Array; loc: BlockLoc | null } | null> {
  const { rows } = await ctx.pool.query(
    `SELECT r.cid, b.pack_id, p.key, p.size_bytes, b.byte_offset, b.byte_length, b.refcount
     FROM records r LEFT JOIN blocks b ON b.cid = r.cid LEFT JOIN packs p ON p.id = b.pack_id
     WHERE r.did = $1 AND r.collection = $2 AND r.rkey = $3`,
    [node.did, node.collection, node.rkey],
  );
  const r = rows[0];
  return r ? { cid: r.cid, loc: r.pack_id === null ? null : toLoc(r) } : null;
}
