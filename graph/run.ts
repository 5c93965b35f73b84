/**
 * Running one walk of a given type over given roots: the domain entry point that the walk
 * activity, the benchmark and the tests share. Turns a plain-data `WalkSpec` (what a workflow
 * input carries) into a graph filter, a sampler and a visitor, and findings into Postgres.
 */
import { type GraphStores, type WalkOptions, type WalkResult, walkGraph } from './engine.ts';
import { type FindingSink, PgFindings, teeFindings } from './findings.ts';
import type { Node } from './nodes.ts';
import { type GraphFilter, type NodeType, resolveWalkGraph } from './schema.ts';
import { WALK_TYPES, type VisitorStores, type WalkTypeName, type WalkTypeOptions, makeVisitor } from './walks/index.ts';

export interface WalkSpec extends WalkTypeOptions {
  type: WalkTypeName;
  filter?: GraphFilter;
  sampling?: { rate: number; offset: number; pathRegex?: string };
  scheduledMax?: number;
  rootConcurrency?: number;
  errorAsData?: boolean;
}

export interface RunOptions extends Pick<WalkOptions, 'signal' | 'skipRoots' | 'onRootDone' | 'progress' | 'blockSource' | 'repoBatch'> {
  /** Findings go to `walk_findings` under this id. */
  walkId?: string;
  /** Findings also go here (a summary, a test). */
  findings?: FindingSink;
}

/**
 * Walks `roots` as `spec` says.
 * @throws {GraphFilterError} on bad filters; {SyntaxError} on a bad path regex; and what
 *   `walkGraph` throws.
 */
export async function runWalk(stores: GraphStores & VisitorStores, spec: WalkSpec, roots: readonly Node[], opts: RunOptions = {}): Promise<WalkResult> {
  const rootTypes = new Set<NodeType>(roots.map((r) => r.type));
  if (rootTypes.size === 0) rootTypes.add('Repo');
  const graph = resolveWalkGraph(spec.filter ?? {}, rootTypes, WALK_TYPES[spec.type].defaultNodes);
  const visitor = makeVisitor(spec.type, stores, spec, graph);
  const sinks: FindingSink[] = [];
  if (opts.walkId) sinks.push(new PgFindings(stores.pool, opts.walkId));
  if (opts.findings) sinks.push(opts.findings);
  const s = spec.sampling;
  const { walkId: _walkId, findings: _findings, ...engineOpts } = opts;
  return walkGraph(stores, {
    ...engineOpts,
    roots,
    graph,
    visitor,
    findings: teeFindings(...sinks),
    ...(s ? { sampling: { rate: s.rate, offset: s.offset, ...(s.pathRegex ? { pathRegex: new RegExp(s.pathRegex, 'u') } : {}) } } : {}),
    ...(spec.scheduledMax ? { scheduledMax: spec.scheduledMax } : {}),
    ...(spec.rootConcurrency ? { rootConcurrency: spec.rootConcurrency } : {}),
    errorAsData: spec.errorAsData ?? false,
  });
}
