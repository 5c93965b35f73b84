/**
 * Record: a record block. Steps to the blobs it references (with its repo path), to the records
 * its strong refs name when we hold them, and to its pack. The record is read and parsed only
 * when one of those edges is walked or the walk type asks for its bytes or references.
 */
import { extractRefs, type RecordRefs } from '../../atproto/refs.ts';
import { cidFromString } from '../../atproto/cid.ts';
import type { NodeOf, OutEdge } from '../nodes.ts';
import type { StepContext, StepResult } from './context.ts';
import { loadBlock } from './load-block.ts';
import { andThen, type MaybePromise } from '../maybe-promise.ts';

export function stepRecord(node: NodeOf<'Record'>, ctx: StepContext, path: string | undefined): MaybePromise<StepResult<'Record'>> {
  const wantRefs = ctx.needs.recordRefs || ctx.wants('RecordToBlob') || ctx.wants('RecordToRecord');
  const loaded = loadBlock(ctx, node.cid, node.loc, wantRefs || ctx.needs.blockBytes, ctx.wants('RecordToPack') ? 'RecordToPack' : null);
  return andThen(loaded, ({ packEdges, loc, bytes, hashOk }) => {
    const edges: OutEdge[] = packEdges;
    let refs: RecordRefs | null = null;
    let refsError: string | null = null;
    if (wantRefs && bytes && hashOk) {
      try {
        refs = extractRefs(bytes);
      } catch (err) {
        refsError = (err as Error).message;
      }
    }
    const result: StepResult<'Record'> = { data: { loc, bytes, hashOk, refs, refsError }, edges, bytes: bytes?.length ?? 0 };
    if (!refs) return result;
    if (ctx.wants('RecordToBlob')) {
      for (const b of refs.blobs) edges.push({ type: 'RecordToBlob', node: { type: 'Blob', cid: b.cid }, ...(path !== undefined ? { path } : {}) });
    }
    if (!ctx.wants('RecordToRecord') || refs.strongRefs.length === 0) return result;
    const strong = refs.strongRefs;
    return (async () => {
      for (const s of strong) {
        const cid = cidFromString(s.cid);
        // Only records we hold: a strong ref into a repo we do not mirror leads nowhere.
        const target = cid ? await ctx.blocks.locate(cid) : null;
        if (cid && target) edges.push({ type: 'RecordToRecord', node: { type: 'Record', cid, loc: target }, path: `${s.collection}/${s.rkey}` });
      }
      return result;
    })();
  });
}
