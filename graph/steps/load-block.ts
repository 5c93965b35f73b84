/** Locating and reading a block node, shared by the Commit, MstNode, Record and Block steps. */
import { cidToString } from '../../atproto/cid.ts';
import { blockHashMatches } from '../blocks.ts';
import { BlockNotIndexedError, PartialStepError } from '../errors.ts';
import type { BlockLoc, OutEdge } from '../nodes.ts';
import { andThen, type MaybePromise } from '../maybe-promise.ts';
import type { BlockData, StepContext } from './context.ts';

export type LoadedBlock = BlockData & { packEdges: OutEdge[] };

/** The edge types from a block node to its pack. */
export type PackEdgeType = 'CommitToPack' | 'MstNodeToPack' | 'RecordToPack';

/**
 * The last edge made of each type: a walk steps a pack's blocks one after another, and every
 * one has an edge to it. Edges and nodes are values nobody changes, so one serves them all
 * (an edge and a node object a block, and for the visited set the hash of a 75-character key,
 * which `identityHash` keeps for the last pack too).
 */
const lastPackEdge: Partial<Record<PackEdgeType, OutEdge & { node: { type: 'Pack'; key: string } }>> = {};

function packEdgeOf(type: PackEdgeType, key: string): OutEdge {
  const last = lastPackEdge[type];
  if (last !== undefined && last.node.key === key) return last;
  const edge = { type, node: { type: 'Pack' as const, key } };
  lastPackEdge[type] = edge;
  return edge;
}

/**
 * The block's location (the hint, the root's bulk-read locations, or a batched index lookup)
 * and, when `needBytes`, its bytes and whether they match the CID. Synchronous when the
 * location is known and the pack is cached — the common case, and the walk's hot path.
 *
 * `packEdge` is the type of the edge to the block's pack (null when the walk does not follow
 * it), which the walk follows even when the read fails (see `PartialStepError`).
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
  packEdge: PackEdgeType | null,
): MaybePromise<LoadedBlock> {
  const known = hint ?? ctx.scope.locations.get(cid);
  const located = known ?? ctx.blocks.locate(cid);
  return andThen(located, (loc) => {
    if (!loc) throw new BlockNotIndexedError(cidToString(cid, 0));
    const packEdges = loc.packKey === null || packEdge === null ? [] : [packEdgeOf(packEdge, loc.packKey)];
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
