/**
 * Why a walk could not load a node, or stopped. A step throws one of the load errors; the
 * engine either stops the walk with a `WalkStepError` (naming the node and the route that led to
 * it) or, with `errorAsData`, records it as a finding and goes on.
 */

/** A node could not be loaded. `code` is what findings record as the check name. */
export class NodeLoadError extends Error {
  override name = 'NodeLoadError';
  readonly code: string;
  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** The block index has no row for a CID that something references. */
export class BlockNotIndexedError extends NodeLoadError {
  override name = 'BlockNotIndexedError';
  readonly cid: string;
  constructor(cid: string) {
    super('block-not-indexed', `block ${cid} is not in the block index`);
    this.cid = cid;
  }
}

/** A block index row names a pack that has no `packs` row. */
export class PackRowMissingError extends NodeLoadError {
  override name = 'PackRowMissingError';
  constructor(cid: string, packId: number) {
    super('pack-row-missing', `block ${cid} is indexed in pack ${packId}, which has no packs row`);
  }
}

/** The blobstore does not hold a pack the index names. */
export class PackObjectMissingError extends NodeLoadError {
  override name = 'PackObjectMissingError';
  readonly packKey: string;
  constructor(packKey: string, cid: string) {
    super('pack-missing', `pack ${packKey} holding block ${cid} is not in the blobstore`);
    this.packKey = packKey;
  }
}

/** A SQL row a root names does not exist. */
export class RowMissingError extends NodeLoadError {
  override name = 'RowMissingError';
  constructor(what: string) {
    super('row-missing', `${what} does not exist`);
  }
}

/**
 * A step that failed after finding some of its edges (a block whose pack is missing still leads
 * to that pack): the engine records `cause` and still follows `edges`, so that a scrub reaches
 * the very pack whose absence stopped the block from loading.
 */
export class PartialStepError extends Error {
  override name = 'PartialStepError';
  readonly edges: readonly unknown[];
  constructor(cause: unknown, edges: readonly unknown[]) {
    super(cause instanceof Error ? cause.message : String(cause), { cause });
    this.edges = edges;
  }
}

/** A step failed and the walk was not asked to treat errors as data. */
export class WalkStepError extends Error {
  override name = 'WalkStepError';
  readonly nodeType: string;
  readonly nodeKey: string;
  /** `Type:key` of each node from the root, joined by the edge types. */
  readonly route: string;
  constructor(nodeType: string, nodeKey: string, route: string, cause: unknown) {
    super(`${nodeType} ${nodeKey}: ${cause instanceof Error ? cause.message : String(cause)} (route: ${route})`, { cause });
    this.nodeType = nodeType;
    this.nodeKey = nodeKey;
    this.route = route;
  }
}

/** The walk's AbortSignal fired; what was walked until then is in `totals`. */
export class WalkAbortedError extends Error {
  override name = 'WalkAbortedError';
  readonly totals: unknown;
  constructor(totals: unknown, reason: unknown) {
    super(`walk aborted: ${reason instanceof Error ? reason.message : String(reason ?? 'aborted')}`);
    this.totals = totals;
  }
}
