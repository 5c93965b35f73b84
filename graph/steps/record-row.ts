/** RecordRow: one row of the record index. Steps to the record block it names, when that is indexed. */
import { toLoc } from '../blocks.ts';
import type { BlockLoc, NodeOf, OutEdge } from '../nodes.ts';
import type { StepContext, StepResult } from './context.ts';
import type { MaybePromise } from '../maybe-promise.ts';

/** `path` is the row's own (`collection/rkey`) when the Repo step found it: not built again. */
export function stepRecordRow(node: NodeOf<'RecordRow'>, ctx: StepContext, path: string | undefined): MaybePromise<StepResult<'RecordRow'>> {
  const hint = node.row;
  if (!hint) return readRow(ctx, node).then((row) => result(node, row, ctx, path));
  const cid = hint.cid;
  const loc = ctx.scope.locations.get(cid);
  if (loc) return result(node, { cid, loc }, ctx, path);
  return ctx.blocks.locate(cid).then((found) => result(node, { cid, loc: found }, ctx, path));
}

function result(node: NodeOf<'RecordRow'>, row: { cid: Uint8Array; loc: BlockLoc | null } | null, ctx: StepContext, path: string | undefined): StepResult<'RecordRow'> {
  const edges: OutEdge[] = [];
  if (row?.loc && ctx.wants('RecordRowToRecord')) {
    edges.push({ type: 'RecordRowToRecord', node: { type: 'Record', cid: row.cid, loc: row.loc }, path: path ?? `${node.collection}/${node.rkey}` });
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
