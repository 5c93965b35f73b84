/** Locating and reading a block node, shared by the Commit, MstNode, Record and Block steps. */
import { cidToString } from '../../atproto/cid.ts';
import { blockHashMatches } from '../blocks.ts';
import { BlockNotIndexedError, PartialStepError } from '../errors.ts';
import type { BlockLoc, OutEdge } from '../nodes.ts';
import { andThen, type MaybePromise } from '../maybe-promise.ts';
import type { BlockData, StepContext } from './context.ts';

export type LoadedBlock = BlockData & { packEdges: OutEdge[] };

/**
 * The block's location (the hint, the root's bulk-read locations, or a batched index lookup)
 * and, when `needBytes`, its bytes and whether they match the CID. Synchronous when the
 * location is known and the pack is cached — the common case, and the walk's hot path.
 *
 * `packEdge` makes the edge to the block's pack, which the walk follows even when the read
 * fails (see `PartialStepError`).
 *
 * @throws {BlockNotIndexedError} when the block index has no row for `cid`.
 * @throws {PartialStepError} with the pack edge, wrapping the errors of `BlockSource.read`
 *   (pack row or object missing, store unreachable).
 */
export function loadBlock(
  ctx: StepContext,
  cid: Uint8Array,
  hint: BlockLoc | undefined,
  needBytes: boolean,
  packEdge: (packKey: string) => OutEdge | null,
): MaybePromise<LoadedBlock> {
  const known = hint ?? ctx.scope.locations.get(cid);
  const located = known ?? ctx.blocks.locate(cid);
  return andThen(located, (loc) => {
    if (!loc) throw new BlockNotIndexedError(cidToString(cid, 0));
    const edge = loc.packKey === null ? null : packEdge(loc.packKey);
    const packEdges = edge ? [edge] : [];
    if (!needBytes) return { loc, bytes: null, hashOk: true, packEdges };
    const cached = ctx.blocks.readCached(loc);
    if (cached) return { loc, bytes: cached, hashOk: blockHashMatches(cid, cached), packEdges };
    return ctx.blocks.read(cid, loc).then(
      (bytes) => ({ loc, bytes, hashOk: blockHashMatches(cid, bytes), packEdges }),
      (err: unknown) => {
        throw new PartialStepError(err, packEdges);
      },
    );
  });
}
