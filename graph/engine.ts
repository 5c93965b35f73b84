/**
 * The walk: from a list of roots, step nodes (load them, find their edges), follow the edges
 * the graph filter keeps, and hand every stepped node to the walk type's visitor.
 *
 * Contracts:
 * - **Visited per root.** Each root (a repo, or a `Type:key` root) has its own visited set, so
 *   a node is stepped once per root, and the totals of a set of roots are the sum of each
 *   root's totals whatever pages, slices, retries or concurrency they were walked in. A node two
 *   repos share (a blob, a block both hold) is stepped once for each; across a whole mirror
 *   that costs little, and it is what makes pages resumable with exact totals.
 * - **Sampling** decides what is checked, not what is walked: every node reachable from the
 *   roots is stepped (its edges are the only way to find the nodes below it), and a node is
 *   *sampled* — counted as checked and checked by the visitor — when
 *   `(samplingHash(node) + offset) % rate == 0` and, with a path regex, when the edge that led
 *   to it carried a repo path the regex matches (nodes without a path are not sampled then).
 *   Rate R with offsets 0..R−1 samples every node exactly once.
 * - **Bounded loads.** At most `scheduledMax` steps (and their visits) run at once; at most
 *   `rootConcurrency` roots are open (being walked or finishing) at once, the oldest served
 *   first; past `LARGE_ROOTS` of them, a root opens only while the open ones hold fewer than
 *   `OPEN_NODES` nodes between them. Small repos leave the walk waiting on each root's few round
 *   trips unless many are open (and their batched lookups then share queries); large ones would
 *   hold their visited sets and block locations at once. A node with many children (a repo's
 *   record rows and events) hands them over in chunks (`StepResult.more`), pulled as the stack
 *   drains to them, in the order one list would have given: a repo of a million records puts
 *   a chunk of its rows on the stack at a time, not two million routes.
 * - **Errors.** A step or check that throws stops the walk with a `WalkStepError` naming the
 *   node and its route, unless `errorAsData`: then it is a finding (check = the error's code,
 *   or `step-failed`), counted in the type's `errors`, and the walk goes on; the root is then
 *   `incomplete` for checks that need its whole subgraph.
 * - **A root is done** when every node under it is stepped, every deferred check has finished,
 *   the visitor's `rootDone` ran and the findings are stored; only then are its totals added
 *   and `onRootDone` called (an activity heartbeats there).
 * - **Abort.** When `signal` fires, no new step starts; the walk rejects with a
 *   `WalkAbortedError` carrying the totals of the roots done.
 *
 * Order and speed: each root's nodes are kept on a stack (depth first, so a repo's blocks are
 * read while its packs are cached and little waits in memory). Steps that find everything they
 * need in memory complete synchronously (`maybe-promise.ts`) and run in a loop that yields to
 * I/O every few hundred; the rest are promises, counted against `scheduledMax`.
 */
import type pg from 'pg';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { BlockSource, type BlockSourceOptions } from './blocks.ts';
import { LocationTable } from './locations.ts';
import { NodeLoadError, PartialStepError, WalkAbortedError, WalkStepError } from './errors.ts';
import type { Finding, FindingSink, Severity } from './findings.ts';
import { samplingHash } from './hash.ts';
import { type Node, type OutEdge, nodeKey } from './nodes.ts';
import { formatProgress, type ProgressSnapshot } from './progress.ts';
import { type Route, formatRoute, rootRoute, routeHops } from './route.ts';
import { EDGE_TYPES, type NodeType, type WalkGraph } from './schema.ts';
import { NO_NEEDS, type EdgeChunks, type RootScope, type StepContext, type StepNeeds, type StepResult, type Visit } from './steps/context.ts';
import { isPromise, type MaybePromise } from './maybe-promise.ts';
import { step } from './steps/index.ts';
import { rowLoaders } from './steps/rows.ts';
import { repoWants } from './steps/repo.ts';
import { RepoBatches, type RepoBatchOptions } from './repo-batch.ts';
import { type TypeTotals, type WalkTotals, addTotals, emptyTotals, emptyTypeTotals } from './totals.ts';
import { VisitedSet } from './visited.ts';

/** Roots open whatever their size, and the nodes open roots may hold before no more open. */
const LARGE_ROOTS = 4;
const OPEN_NODES = 100_000;

export interface Sampling {
  rate: number;
  offset: number;
  pathRegex?: RegExp;
}

/** A finding as a visitor reports it; node and route default to the node being visited. */
export interface FindingInput {
  check: string;
  severity?: Severity;
  detail: string;
  node?: Node;
  route?: Route;
  components?: string[];
}

export interface VisitContext {
  readonly sampled: boolean;
  readonly route: Route;
  readonly path: string | undefined;
  readonly scope: RootScope;
  report(finding: FindingInput): void;
  count(counter: string, n?: number): void;
  /**
   * Work that finishes later (a check waiting for a batched query) without holding a load slot.
   * It completes before the root is done; if it throws, that is a failure of this node.
   */
  defer(work: () => Promise<void>): void;
}

export interface RootDoneContext {
  /** Some step under this root failed (with errorAsData): whole-root checks should not judge. */
  readonly incomplete: boolean;
  report(finding: FindingInput): void;
  count(counter: string, n?: number): void;
}

/** What a walk type does with the nodes a walk steps. */
export interface Visitor {
  /** Loads the walk type needs beyond what the walked edges need. */
  readonly needs?: Partial<StepNeeds>;
  /** Called once for every stepped node, sampled or not (`ctx.sampled` says which). */
  visit(v: Visit, ctx: VisitContext): void | Promise<void>;
  /** Called when everything under a root was stepped (and deferred work finished). */
  rootDone?(scope: RootScope, ctx: RootDoneContext): void | Promise<void>;
}

export interface WalkOptions {
  roots: readonly Node[];
  graph: WalkGraph;
  visitor: Visitor;
  findings: FindingSink;
  sampling?: Sampling;
  /** Most steps at once. Default 256. */
  scheduledMax?: number;
  /** Most roots open at once (past 4, only while they are small: see the module comment). Default 256: open small roots share their batched queries (2,000 repos of 10 records: 34 µs of CPU per node against 39 with 64). */
  rootConcurrency?: number;
  errorAsData?: boolean;
  signal?: AbortSignal;
  /** Roots (by index) already done by an earlier attempt: skipped. */
  skipRoots?: ReadonlySet<number>;
  /** Called after each root is done, with the totals of every root done so far. */
  onRootDone?(index: number, root: Node, totals: WalkTotals): void | Promise<void>;
  progress?: { label: string; intervalMs?: number; emit(line: string, snapshot: ProgressSnapshot): void };
  blockSource?: BlockSourceOptions;
  /** How many Repo roots are read together. */
  repoBatch?: RepoBatchOptions;
}

export interface GraphStores {
  pool: pg.Pool;
  store: BlobStore;
}

export interface WalkResult {
  totals: WalkTotals;
  elapsedMs: number;
  /** The largest visited set of any root: nodes and bytes. */
  visited: { nodes: number; bytes: number };
  /** Blobstore traffic for blocks. */
  blockRequests: number;
  blockBytesFetched: number;
}

/**
 * Edges a step hands over in chunks (`StepResult.more`), on the stack where they would have lain
 * had the step returned them all at once: each pull puts the next chunk on top of it, so the
 * stack holds a chunk and what lies below it, not a repo's million record rows.
 */
class Pull {
  readonly source: EdgeChunks;
  /** The route to the node whose edges these are. */
  readonly parent: Route;
  /** That node's type totals (its `children`). */
  readonly totals: TypeTotals;
  constructor(source: EdgeChunks, parent: Route, totals: TypeTotals) {
    this.source = source;
    this.parent = parent;
    this.totals = totals;
  }
}

interface RootRun {
  index: number;
  root: Node;
  /** Nodes to step, as the routes that reached them (a route ends at its node), and chunks of edges to pull. */
  stack: (Route | Pull)[];
  /** In `ready` (its stack is not empty). */
  ready: boolean;
  /** Left `active` (finishing or done). */
  closed: boolean;
  /** What every step under this root shares (the path is a step argument). */
  ctx: StepContext;
  inflight: number;
  deferred: number;
  deferredDone: (() => void) | undefined;
  visited: VisitedSet;
  /** Nodes scheduled under this root: those in `visited` and a Repo's edges, which skip it (see `follow`). */
  scheduled: number;
  scope: RootScope;
  totals: WalkTotals;
  incomplete: boolean;
}

/**
 * Walks `opts.roots`. See the module comment for the contract.
 * @throws {WalkStepError} when a step fails and `errorAsData` is off.
 * @throws {WalkAbortedError} when `opts.signal` fires.
 */
export async function walkGraph(stores: GraphStores, opts: WalkOptions): Promise<WalkResult> {
  const started = performance.now();
  const scheduledMax = Math.max(1, opts.scheduledMax ?? 256);
  const rootConcurrency = Math.max(1, opts.rootConcurrency ?? 256);
  const largeRoots = Math.min(LARGE_ROOTS, rootConcurrency);
  const needs: StepNeeds = { ...NO_NEEDS, ...opts.visitor.needs };
  const blocks = new BlockSource(stores.pool, stores.store, { countRefs: needs.refcounts, ...opts.blockSource });
  const rows = rowLoaders(stores.pool);
  const edges = opts.graph.edges;
  const walkedTypes = opts.graph.nodes;
  // A plain object answers faster than a Set, and steps ask for every node.
  const wanted: Record<string, boolean> = Object.fromEntries(EDGE_TYPES.map((e) => [e.type, edges.has(e.type)]));
  const wants = (e: Parameters<StepContext['wants']>[0]) => wanted[e] === true;
  const repos = new RepoBatches(stores.pool, opts.roots, opts.skipRoots, repoWants(wants, needs), rows.knownPacks, opts.repoBatch);
  const sampled = sampler(opts.sampling);
  const completed = emptyTotals();
  const visitedMax = { nodes: 0, bytes: 0 };

  const active: RootRun[] = [];
  /**
   * The active roots whose stacks hold nodes, oldest (lowest index) first: the next node to step
   * is the top of `ready[0]`'s stack. Kept, rather than searched for in `active` at every step,
   * because hundreds of small roots are open at once.
   */
  const ready: RootRun[] = [];
  const markReady = (run: RootRun) => {
    if (run.ready || run.stack.length === 0) return;
    run.ready = true;
    let lo = 0;
    let hi = ready.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (ready[mid]!.index < run.index) lo = mid + 1;
      else hi = mid;
    }
    ready.splice(lo, 0, run);
  };
  let nextRoot = 0;
  let inflight = 0;
  let finishing = 0;
  /** Nodes scheduled under the open roots (active and finishing): what their visited sets and stacks hold. */
  let openNodes = 0;
  let fatal: unknown;
  let settle!: { resolve: () => void; reject: (e: unknown) => void };
  const finished = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));

  const makeFinding = (run: RootRun, f: FindingInput, node: Node, route: Route): Finding => {
    const target = f.node ?? node;
    const severity = f.severity ?? 'error';
    const key = `${f.check}:${severity}`;
    run.totals.findings[key] = (run.totals.findings[key] ?? 0) + 1;
    return {
      check: f.check,
      severity,
      nodeType: target.type,
      key: nodeKey(target),
      route: routeHops(f.route ?? route),
      detail: f.detail,
      ...(f.components ? { components: f.components } : {}),
    };
  };
  const count = (run: RootRun, counter: string, n: number) => {
    run.totals.counters[counter] = (run.totals.counters[counter] ?? 0) + n;
  };
  const typeTotals = (run: RootRun, type: NodeType): TypeTotals => (run.totals.types[type] ??= emptyTypeTotals());

  /** A step, visit or deferred check of the node `route` leads to failed. */
  const failed = (run: RootRun, route: Route, err: unknown) => {
    if (err instanceof PartialStepError) {
      if (opts.errorAsData) follow(run, route, err.edges as OutEdge[], typeTotals(run, route.node.type));
      err = err.cause;
    }
    run.incomplete = true;
    typeTotals(run, route.node.type).errors++;
    if (opts.errorAsData) {
      const check = err instanceof NodeLoadError ? err.code : 'step-failed';
      opts.findings.add(makeFinding(run, { check, detail: err instanceof Error ? err.message : String(err) }, route.node, route));
    } else {
      fatal ??= new WalkStepError(route.node.type, nodeKey(route.node), formatRoute(route), err);
    }
  };

  /** The context of one visit: a plain object with methods, not four closures per node. */
  class Visiting implements VisitContext {
    readonly sampled: boolean;
    readonly route: Route;
    readonly #run: RootRun;
    constructor(run: RootRun, route: Route, sampled: boolean) {
      this.#run = run;
      this.route = route;
      this.sampled = sampled;
    }
    get path(): string | undefined {
      return this.route.path;
    }
    get scope(): RootScope {
      return this.#run.scope;
    }
    report(f: FindingInput): void {
      opts.findings.add(makeFinding(this.#run, f, this.route.node, this.route));
    }
    count(counter: string, n = 1): void {
      count(this.#run, counter, n);
    }
    defer(work: () => Promise<void>): void {
      const run = this.#run;
      run.deferred++;
      void work()
        .catch((err: unknown) => failed(run, this.route, err))
        .finally(() => {
          if (--run.deferred === 0) run.deferredDone?.();
        });
    }
  }

  const startRoot = (index: number) => {
    const root = opts.roots[index]!;
    const scope: RootScope = { index, root, locations: new LocationTable() };
    const run: RootRun = {
      index,
      root,
      stack: [],
      ready: false,
      closed: false,
      ctx: { pool: stores.pool, store: stores.store, blocks, rows, repos, needs, scope, wants },
      inflight: 0,
      deferred: 0,
      deferredDone: undefined,
      visited: new VisitedSet(),
      scheduled: 1,
      scope,
      totals: emptyTotals(),
      incomplete: false,
    };
    run.visited.add(root);
    openNodes++;
    run.stack.push(rootRoute(root));
    active.push(run);
    markReady(run);
  };

  /** Steps and visits the node `route` leads to; synchronous when the step and visit are. */
  const runItem = (run: RootRun, route: Route): MaybePromise<void> => {
    const result = step(route.node, run.ctx, route.path);
    return isPromise(result) ? result.then((r) => stepped(run, route, r)) : stepped(run, route, result);
  };

  const stepped = (run: RootRun, route: Route, result: StepResult<NodeType>): MaybePromise<void> => {
    const node = route.node;
    const isSampled = sampled(node, route.path);
    const t = typeTotals(run, node.type);
    t.walked++;
    t.bytes += result.bytes;
    run.totals.nodes++;
    run.totals.bytes += result.bytes;
    if (isSampled) t.checked++;
    const visiting = opts.visitor.visit({ node, data: result.data } as Visit, new Visiting(run, route, isSampled));
    if (visiting) return visiting.then(() => followAll(run, route, result, t));
    followAll(run, route, result, t);
  };

  const followAll = (run: RootRun, route: Route, result: StepResult<NodeType>, t: TypeTotals) => {
    const more = result.more;
    // A step with many edges sizes the set once, not by halves. A repo's records and events
    // skip the set (see `follow`); the record blocks they lead to, about one for every two of
    // them, and the tree above those blocks, do not.
    const n = result.edges.length + (more ? more.remaining : 0);
    if (n > 1024) run.visited.reserve(run.visited.size + (route.node.type === 'Repo' ? n * 0.75 : n * 1.5));
    follow(run, route, result.edges, t);
    // Above the step's own edges, as the end of one list of them would be: stepped first.
    if (more) {
      run.stack.push(new Pull(more, route, t));
      markReady(run);
    }
  };

  /** Takes the next chunk of `p`'s edges: on the stack above what remains of them. */
  const pull = (run: RootRun, p: Pull): void => {
    const chunk = p.source.next();
    if (chunk === null) return;
    run.stack.push(p);
    follow(run, p.parent, chunk, p.totals);
  };

  const follow = (run: RootRun, parent: Route, found: readonly OutEdge[], t: TypeTotals) => {
    // A Repo is stepped once per root (it is only ever a root: no edge leads to one), and its
    // edges name distinct things: its head, and rows of the record index and the event log by
    // their primary keys. So they are scheduled without the visited set, whose hash of each
    // row's key (text: did, collection, rkey; an event's id) was most of a row's cost.
    const once = parent.node.type === 'Repo';
    for (const e of found) {
      if (!wanted[e.type] || !walkedTypes.has(e.node.type)) continue;
      t.children++;
      if (!once && !run.visited.add(e.node)) continue;
      run.scheduled++;
      openNodes++;
      run.stack.push({ edge: e.type, node: e.node, path: e.path, parent });
    }
    markReady(run);
  };

  const finishRoot = async (run: RootRun) => {
    active.splice(active.indexOf(run), 1);
    run.closed = true;
    finishing++;
    try {
      if (run.deferred > 0) await new Promise<void>((r) => (run.deferredDone = r));
      if (fatal === undefined) {
        await opts.visitor.rootDone?.(run.scope, {
          incomplete: run.incomplete,
          report: (f) => opts.findings.add(makeFinding(run, f, run.root, rootRoute(run.root))),
          count: (counter, n = 1) => count(run, counter, n),
        });
      }
      await opts.findings.flush();
      if (run.visited.size > visitedMax.nodes) {
        visitedMax.nodes = run.visited.size;
        visitedMax.bytes = run.visited.byteLength;
      }
      if (fatal === undefined && !opts.signal?.aborted) {
        run.totals.roots = 1;
        addTotals(completed, run.totals);
        await opts.onRootDone?.(run.index, run.root, completed);
      }
    } catch (err) {
      fatal ??= err;
    } finally {
      finishing--;
      openNodes -= run.scheduled;
      pump();
    }
  };

  const stopping = () => fatal !== undefined || opts.signal?.aborted === true;

  // Steps that complete synchronously run in a loop; every so many the loop yields, so that
  // query results, timers and I/O are not starved by a long run of in-memory steps.
  const SYNC_RUN = 512;
  let yielded = false;
  const resume = () => {
    yielded = false;
    pump();
  };

  function pump(): void {
    if (yielded) return;
    let sync = 0;
    while (!stopping()) {
      // A finishing root still holds its visited set and findings: it counts as open.
      while (nextRoot < opts.roots.length && (active.length + finishing < largeRoots || (active.length + finishing < rootConcurrency && openNodes < OPEN_NODES))) {
        const index = nextRoot++;
        if (!opts.skipRoots?.has(index)) startRoot(index);
      }
      if (inflight >= scheduledMax) return;
      const run = ready[0];
      if (!run) break;
      const item = run.stack.pop()!;
      if (run.stack.length === 0) {
        ready.shift();
        run.ready = false;
      }
      const isPull = item instanceof Pull;
      const route = isPull ? item.parent : item;
      let pending: MaybePromise<void>;
      try {
        pending = isPull ? pull(run, item) : runItem(run, route);
      } catch (err) {
        failed(run, route, err);
        pending = undefined;
      }
      if (isPromise(pending)) {
        run.inflight++;
        inflight++;
        pending
          .catch((err: unknown) => failed(run, route, err))
          .finally(() => {
            run.inflight--;
            inflight--;
            if (run.inflight === 0 && run.stack.length === 0 && !run.closed) void finishRoot(run);
            pump();
          });
      } else {
        if (run.inflight === 0 && run.stack.length === 0) void finishRoot(run);
        if (++sync >= SYNC_RUN) {
          yielded = true;
          setImmediate(resume);
          return;
        }
      }
    }
    // Roots whose every step is done finish even when nothing else is running.
    let idle: RootRun[] | undefined;
    for (const run of active) if (run.inflight === 0 && run.stack.length === 0) (idle ??= []).push(run);
    if (idle && !stopping()) for (const run of idle) void finishRoot(run);
    if (inflight === 0 && finishing === 0 && (stopping() || (active.length === 0 && nextRoot >= opts.roots.length))) {
      if (fatal !== undefined) settle.reject(fatal);
      else if (opts.signal?.aborted) settle.reject(new WalkAbortedError(completed, opts.signal.reason));
      else settle.resolve();
    }
  }

  const snapshot = (done: boolean): ProgressSnapshot => {
    const totals = addTotals(emptyTotals(), completed);
    if (!done) for (const r of active) addTotals(totals, { ...r.totals, roots: 0 });
    return { label: opts.progress?.label ?? 'walk', elapsedMs: performance.now() - started, totals, done };
  };
  const timer = opts.progress
    ? setInterval(() => {
        const s = snapshot(false);
        opts.progress!.emit(formatProgress(s), s);
      }, opts.progress.intervalMs ?? 5000)
    : undefined;
  timer?.unref();
  const onAbort = () => pump();
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  try {
    pump();
    await finished;
  } finally {
    if (timer) clearInterval(timer);
    opts.signal?.removeEventListener('abort', onAbort);
    await opts.findings.flush().catch(() => {});
  }
  if (opts.progress) {
    const s = snapshot(true);
    opts.progress.emit(formatProgress(s), s);
  }
  return {
    totals: completed,
    elapsedMs: performance.now() - started,
    visited: visitedMax,
    blockRequests: blocks.requests,
    blockBytesFetched: blocks.bytesFetched,
  };
}

function sampler(s: Sampling | undefined): (node: Node, path: string | undefined) => boolean {
  if (!s || (s.rate <= 1 && !s.pathRegex)) return () => true;
  const { rate, offset, pathRegex } = s;
  if (!Number.isInteger(rate) || rate < 1) throw new RangeError(`sample rate ${rate} is not a whole number ≥ 1`);
  if (!Number.isInteger(offset) || offset < 0 || offset >= rate) throw new RangeError(`sample offset ${offset} is not between 0 and ${rate - 1}`);
  return (node, path) => {
    if (pathRegex && (path === undefined || !pathRegex.test(path))) return false;
    return rate === 1 || (samplingHash(node) + offset) % rate === 0;
  };
}
