/**
 * The validate walk: named checks over what a walk steps, each selectable (`checks`), each
 * reporting findings under its own name on the node at fault. Each check is a module of
 * `checks/` (that folder's header says how to add one); this visitor hands each check the
 * visits of the node types it looks at and keeps each check's state per root.
 *
 * | check              | on        | finds                                                              |
 * |--------------------|-----------|--------------------------------------------------------------------|
 * | `block-hash`       | blocks    | bytes in the pack that do not hash to the block's CID              |
 * | `commit-signature` | Commit    | a commit that does not decode or whose signature does not verify with `repos.signing_key` |
 * | `mst`              | MstNode, Commit | a broken MST invariant; a commit whose data root is not `repos.data_cid` |
 * | `index-mst`        | Repo, MstNode | the record index and the MST leaves under the head disagree (either way, or on a CID) |
 * | `record-block`     | RecordRow | an index row naming a block the block index lacks                  |
 * | `refcount`         | blocks    | `blocks.refcount` ≠ the references that exist (records rows, repo heads, events) |
 * | `event-block`      | Event     | an event naming a block the block index lacks                      |
 * | `repo-state`       | Repo, Commit | a repos row at odds with itself, its head commit, its record index or its counts |
 * | `strong-ref` (info)| Record    | a strong ref into a repo we mirror whose record version we do not hold |
 *
 * Checks run on sampled nodes.
 */
import type pg from 'pg';
import { type RefcountMismatch, indexedBlocks, mirroredDids, refcountMismatches } from '../../../storage/validate-queries.ts';
import { Batcher } from '../../batch.ts';
import { cidMapKey } from '../../blocks.ts';
import type { Visitor } from '../../engine.ts';
import { NODE_TYPES, type NodeType, type WalkGraph } from '../../schema.ts';
import { NO_NEEDS, type RootScope, type StepNeeds } from '../../steps/context.ts';
import { VALIDATE_CHECKS, type ValidateCheck } from '../names.ts';
import type { AnyCheck, ValidateEnv } from './check.ts';
import { CHECKS } from './checks/index.ts';

export { VALIDATE_CHECKS, type ValidateCheck } from '../names.ts';
export { repoStateProblems } from './checks/repo-state.ts';
export { refcountMismatches } from '../../../storage/validate-queries.ts';

export interface ValidateOptions {
  /** Checks to run; default all. */
  checks?: readonly ValidateCheck[];
}

export class UnknownCheckError extends Error {
  override name = 'UnknownCheckError';
}

/** @throws {UnknownCheckError} naming the unknown check and the known ones. */
export function parseChecks(names: readonly string[] | undefined): Set<ValidateCheck> {
  if (!names || names.length === 0) return new Set(VALIDATE_CHECKS);
  const out = new Set<ValidateCheck>();
  for (const n of names) {
    if (!(VALIDATE_CHECKS as readonly string[]).includes(n)) throw new UnknownCheckError(`unknown check ${JSON.stringify(n)}; known: ${VALIDATE_CHECKS.join(', ')}`);
    out.add(n as ValidateCheck);
  }
  return out;
}

/**
 * The checks that run: the chosen ones that can judge a walk of `graph` (index-mst needs the
 * whole tree walked, and is off otherwise).
 * @throws {UnknownCheckError} on an unknown check name.
 */
export function runningChecks(opts: ValidateOptions = {}, graph?: WalkGraph): AnyCheck[] {
  const chosen = parseChecks(opts.checks);
  return VALIDATE_CHECKS.filter((n) => chosen.has(n)).map((n): AnyCheck => CHECKS[n]).filter((c) => c.canJudge?.(graph) ?? true);
}

/**
 * The validate visitor. `graph` is the walk's: a check that cannot judge it is skipped.
 * @throws {UnknownCheckError} on an unknown check name.
 */
export function validateVisitor(pool: pg.Pool, opts: ValidateOptions = {}, graph?: WalkGraph): Visitor {
  const checks = runningChecks(opts, graph);
  const env: ValidateEnv = {
    pool,
    mirrored: new Batcher<string, boolean>(async (dids) => {
      const set = await mirroredDids(pool, dids);
      return dids.map((d) => set.has(d));
    }, { serial: true }),
    indexed: new Batcher<Uint8Array, boolean>(async (cids) => {
      const set = new Set((await indexedBlocks(pool, cids)).map(cidMapKey));
      return cids.map((c) => set.has(cidMapKey(c)));
    }, { serial: true }),
    refcounts: new Batcher<Uint8Array, RefcountMismatch | null>(async (cids) => {
      const out: (RefcountMismatch | null)[] = cids.map(() => null);
      for (const m of await refcountMismatches(pool, cids)) out[m.index] = { refcount: m.refcount, refs: m.refs };
      return out;
    }, { serial: true, maxBatch: 50_000 }),
  };
  const needs: StepNeeds = { ...NO_NEEDS };
  for (const c of checks) for (const [k, v] of Object.entries(c.needs) as [keyof StepNeeds, boolean][]) needs[k] ||= v;
  // Each check's position in `checks` indexes its state in a root's state array.
  const byType = Object.fromEntries(NODE_TYPES.map((t) => [t, checks.flatMap((c, i) => ((c.nodeTypes as readonly NodeType[]).includes(t) ? [i] : []))])) as Record<NodeType, number[]>;
  const withState = checks.some((c) => c.rootState);
  const statesOf = new WeakMap<RootScope, unknown[]>();
  const states = (scope: RootScope): unknown[] => {
    let s = statesOf.get(scope);
    if (!s) statesOf.set(scope, (s = checks.map((c) => c.rootState?.())));
    return s;
  };

  return {
    needs,
    visit(v, ctx) {
      const mine = byType[v.node.type];
      if (mine.length === 0) return;
      const s = withState ? states(ctx.scope) : undefined;
      for (const i of mine) checks[i]!.visit(v, ctx, s?.[i], env);
    },
    async rootDone(scope, ctx) {
      const s = statesOf.get(scope);
      statesOf.delete(scope);
      if (!s) return;
      for (const [i, c] of checks.entries()) {
        // Awaited only when it is a promise: a small repo's root is done in a few microseconds.
        const pending = c.rootDone?.(s[i], ctx, env);
        if (pending) await pending;
      }
    },
  };
}
