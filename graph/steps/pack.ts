/**
 * Pack: a pack object in the blobstore, as its `packs` row describes it. Steps to the block
 * index rows it holds. The object itself is not fetched here: scrub asks every component about
 * it, and validate's checks read its blocks.
 *
 * Synchronous when the row came with a Repo read (`knownPacks`) and the walk does not go on to
 * the pack's blocks: a small repo's walk steps two or three packs, each otherwise a promise.
 */
import { andThen, type MaybePromise } from '../maybe-promise.ts';
import type { NodeOf, OutEdge } from '../nodes.ts';
import type { PackRow, StepContext, StepResult } from './context.ts';

export function stepPack(node: NodeOf<'Pack'>, ctx: StepContext): MaybePromise<StepResult<'Pack'>> {
  const known = ctx.rows.knownPacks.get(node.key);
  return andThen(known ?? ctx.rows.pack.load(node.key), (row) => withBlocks(row, ctx));
}

function withBlocks(row: PackRow | null, ctx: StepContext): MaybePromise<StepResult<'Pack'>> {
  if (!row || !ctx.wants('PackToBlock')) return { data: { row }, edges: [], bytes: 0 };
  return ctx.blocks.packIndex([row.id]).then((blocks) => {
    const edges: OutEdge[] = blocks.map(([cid, loc]) => ({ type: 'PackToBlock', node: { type: 'Block', cid, loc } }));
    return { data: { row }, edges, bytes: 0 };
  });
}
