/** Blob: a blob a record references, as the `blobs` table knows it (absent when blobs are not mirrored). */
import type { NodeOf } from '../nodes.ts';
import type { StepContext, StepResult } from './context.ts';

export async function stepBlob(node: NodeOf<'Blob'>, ctx: StepContext): Promise<StepResult<'Blob'>> {
  return { data: { row: await ctx.rows.blob.load(node.cid) }, edges: [], bytes: 0 };
}
