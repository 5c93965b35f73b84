/**
 * What a validate check is: the node types it looks at, the loads it needs from the steps, what
 * it does with each visit of those types, and what it does when a root is done. The validate
 * visitor (`index.ts`) hands each check only the visits of its node types and keeps each check's
 * state per root, so a check is a plain object that reads top to bottom.
 */
import type pg from 'pg';
import type { RefcountMismatch } from '../../../storage/validate-queries.ts';
import type { Batcher } from '../../batch.ts';
import type { RootDoneContext, VisitContext } from '../../engine.ts';
import type { NodeOf } from '../../nodes.ts';
import type { NodeType, WalkGraph } from '../../schema.ts';
import type { StepData, StepNeeds } from '../../steps/context.ts';
import type { ValidateCheck } from '../names.ts';

/** A visit of one of the node types `T`: switch on `v.node.type`. */
export type VisitOf<T extends NodeType> = { [K in T]: { node: NodeOf<K>; data: StepData[K] } }[T];

/** What every check of one walk shares: the database, and lookups batched across nodes. */
export interface ValidateEnv {
  pool: pg.Pool;
  /** Whether a DID is a repo we mirror (active or gone). */
  mirrored: Batcher<string, boolean>;
  /** Whether the block index holds a CID. */
  indexed: Batcher<Uint8Array, boolean>;
  /**
   * A block's stored refcount and the references that exist to it, when they differ (null when
   * they agree or the block is not indexed). Shared by every open root: each comparison scans
   * the tables that hold references, so roots finishing together share one.
   */
  refcounts: Batcher<Uint8Array, RefcountMismatch | null>;
}

export interface Check<T extends NodeType = NodeType, S = unknown, N extends ValidateCheck = ValidateCheck> {
  /** The name findings carry and `--check` selects. */
  readonly name: N;
  /** The node types whose visits `visit` gets, sampled or not (`ctx.sampled` says which). */
  readonly nodeTypes: readonly T[];
  /** Loads the steps must make for this check beyond what the walked edges need. */
  readonly needs: Partial<StepNeeds>;
  /** Whether the check can judge a walk of `graph` (default: always); one that cannot is off. */
  readonly canJudge?: (graph: WalkGraph | undefined) => boolean;
  /** The check's state for one root, made when the root's first visit reaches it. */
  readonly rootState?: () => S;
  visit(v: VisitOf<T>, ctx: VisitContext, state: S, env: ValidateEnv): void;
  /** When every node under the root was visited and deferred work finished. */
  rootDone?(state: S, ctx: RootDoneContext, env: ValidateEnv): void | Promise<void>;
}

/**
 * A check of any node types and state, as the registry holds it: `visit` takes the visits of
 * its own node types only, which the visitor guarantees by dispatching on `nodeTypes`.
 */
export type AnyCheck<N extends ValidateCheck = ValidateCheck> = Check<any, any, N>;

/** Infers a check's node types and state from its definition. */
export function defineCheck<N extends ValidateCheck, T extends NodeType, S = undefined>(check: Check<T, S, N>): Check<T, S, N> {
  return check;
}

