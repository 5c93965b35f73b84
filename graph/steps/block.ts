/** Block: a block index row reached from its pack; its bytes are read when the walk type needs them. */
import type { NodeOf } from '../nodes.ts';
import type { StepContext, StepResult } from './context.ts';
import { loadBlock } from './load-block.ts';
import { andThen, type MaybePromise } from '../maybe-promise.ts';

export function stepBlock(node: NodeOf<'Block'>, ctx: StepContext): MaybePromise<StepResult<'Block'>> {
  return andThen(loadBlock(ctx, node.cid, node.loc, ctx.needs.blockBytes, null), ({ loc, bytes, hashOk }) => ({
    data: { loc, bytes, hashOk },
    edges: [],
    bytes: bytes?.length ?? 0,
  }));
}
