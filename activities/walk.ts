/**
 * Walk activities: one page of a walk — a page of a slice's repos (or of explicit roots) — run
 * by the graph engine, heartbeating after every repo it finishes. A retried attempt resumes from
 * the last heartbeat: the same page (its root list is in the details), the repos already done
 * skipped, their totals carried. Because a walk's visited set is per repo, the totals of a
 * resumed page equal those of an uninterrupted one; findings are written idempotently per walk,
 * check and node, so a repo walked twice records nothing twice.
 *
 * A step that fails on the mirror's data (a block not indexed, a pack missing) fails the page
 * without retries (use `errorAsData` to walk on); the worker's own trouble (Postgres or the
 * blobstore unreachable) is thrown for Temporal to retry. Cancellation stops the walk at once
 * and is reported as such.
 */
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { recordWalkTotals } from './counters.ts';
import type { JobContext } from './context.ts';
import { NodeLoadError, WalkAbortedError, WalkStepError } from '../graph/errors.ts';
import { InvalidRootError, type Node, parseRoot } from '../graph/nodes.ts';
import { countRepos, repoPage } from '../graph/repos.ts';
import { runWalk } from '../graph/run.ts';
import { GraphFilterError } from '../graph/schema.ts';
import { type WalkTotals, addTotals, emptyTotals } from '../graph/totals.ts';
import { WalkInput, type WalkInputJson, toWalkSpec } from '../graph/walk-input.ts';

export type WalkPageSource =
  | { kind: 'slice'; slice: number; slices: number; after?: string | undefined; changedSince?: string | undefined }
  | { kind: 'roots'; roots: string[] };

export interface WalkPageInput {
  /** Findings are recorded under this id. */
  walkId: string;
  input: WalkInputJson;
  page: WalkPageSource;
}

export interface WalkPageResult {
  totals: WalkTotals;
  /** Roots in the page. */
  roots: number;
  /** For a slice page: where the next page starts; undefined when the slice is done. */
  cursor: string | undefined;
  /** Roots a previous attempt had finished, skipped by this one. */
  resumedRoots: number;
  elapsedMs: number;
}

/** What a page heartbeats: enough to resume it exactly. */
interface PageCheckpoint {
  roots: string[];
  cursor: string | undefined;
  done: number[];
  totals: WalkTotals;
}

/** Test seams: never set in production. */
export interface WalkActivityHooks {
  /** Called after each root is done and heartbeated (tests slow pages down with it). */
  afterRoot?(index: number): Promise<void>;
}

export function walkActivities({ stores }: Pick<JobContext, 'stores'>, hooks: WalkActivityHooks = {}) {
  return {
    /** Walks one page; see the module comment. */
    async walkPage(raw: WalkPageInput): Promise<WalkPageResult> {
      const started = performance.now();
      const ctx = Context.current();
      const parsed = WalkInput.safeParse(raw.input);
      if (!parsed.success) throw ApplicationFailure.nonRetryable(`invalid walk input: ${parsed.error.message}`, 'InvalidInput');
      const input = parsed.data;
      const prior = ctx.info.heartbeatDetails as PageCheckpoint | undefined;

      let roots: string[];
      let cursor: string | undefined;
      if (prior) {
        ({ roots, cursor } = prior);
      } else if (raw.page.kind === 'slice') {
        const p = await repoPage(stores.pool, {
          slice: raw.page.slice,
          slices: raw.page.slices,
          after: raw.page.after,
          limit: input.pageSize,
          changedSince: raw.page.changedSince ? new Date(raw.page.changedSince) : undefined,
        });
        roots = p.dids;
        cursor = p.cursor;
      } else {
        roots = raw.page.roots;
        cursor = undefined;
      }
      let nodes: Node[];
      try {
        nodes = roots.map((r): Node => (r.startsWith('did:') ? { type: 'Repo', did: r } : parseRoot(r)));
      } catch (err) {
        if (err instanceof InvalidRootError) throw ApplicationFailure.nonRetryable(err.message, 'InvalidInput');
        throw err;
      }

      const done = new Set(prior?.done ?? []);
      const base = prior?.totals ?? emptyTotals();
      let checkpoint: PageCheckpoint = { roots, cursor, done: [...done], totals: base };
      ctx.heartbeat(checkpoint);
      try {
        const result = await runWalk({ pool: stores.pool, store: stores.blobs, healQueue: stores.healQueue }, toWalkSpec(input), nodes, {
          walkId: raw.walkId,
          signal: ctx.cancellationSignal,
          skipRoots: done,
          onRootDone: async (index, _root, totals) => {
            done.add(index);
            checkpoint = { roots, cursor, done: [...done], totals: addTotals(structuredClone(base), totals) };
            ctx.heartbeat(checkpoint);
            await hooks.afterRoot?.(index);
          },
          progress: {
            label: `walk ${raw.walkId} ${input.type}`,
            emit: (line) => {
              ctx.log.info(line);
              // Liveness between repos: a single large repo can take longer than the timeout.
              ctx.heartbeat(checkpoint);
            },
          },
        });
        // Metrics count what this attempt walked: `base` came from an earlier attempt's heartbeat.
        recordWalkTotals(input.type, result.totals);
        return { totals: addTotals(base, result.totals), roots: roots.length, cursor, resumedRoots: prior?.done.length ?? 0, elapsedMs: performance.now() - started };
      } catch (err) {
        if (err instanceof WalkAbortedError && ctx.cancellationSignal.aborted) throw ctx.cancellationSignal.reason ?? err;
        if (err instanceof WalkStepError && err.cause instanceof NodeLoadError) {
          throw ApplicationFailure.nonRetryable(err.message, 'WalkStepError', { nodeType: err.nodeType, nodeKey: err.nodeKey, route: err.route });
        }
        if (err instanceof GraphFilterError || err instanceof SyntaxError) throw ApplicationFailure.nonRetryable(err.message, 'InvalidInput');
        throw err;
      }
    },

    /** Repos in a slice (changed since a time, for tail passes): progress's denominator. */
    async countSliceRepos(q: { slice: number; slices: number; changedSince?: string | undefined }): Promise<number> {
      return countRepos(stores.pool, { slice: q.slice, slices: q.slices, changedSince: q.changedSince ? new Date(q.changedSince) : undefined });
    },
  };
}

export type WalkActivities = ReturnType<typeof walkActivities>;
