/**
 * Pack: a pack object in the blobstore, as its `packs` row describes it. Steps to the block
 * index rows it holds. The object itself is not fetched here: scrub asks every component about
 * it, and validate's checks read its blocks.
 */
import type { NodeOf, OutEdge } from '../nodes.ts';
import type { StepContext, StepResult } from './context.ts';

export async function stepPack(node: NodeOf<'Pack'>, ctx: StepContext): Promise<StepResult<'Pack'>> {
  const row = ctx.rows.knownPacks.get(node.key) ?? (await ctx.rows.pack.load(node.key));
  const edges: OutEdge[] = [];
  if (row && ctx.wants('PackToBlock')) {
    for (const [cid, loc] of await ctx.blocks.packIndex([row.id])) edges.push({ type: 'PackToBlock', node: { type: 'Block', cid, loc } });
  }
  return { data: { row }, edges, bytes: 0 };
}
