/**
 * GC's mark phase: which blocks, and which blobs, are live — reachable from a repo's head
 * (its commit, every MST node, every record), from the record index, or from an event. It is a
 * walk by the graph walker (`graph/engine.ts`) from every repo, over the edges
 * Repo → Commit → MstNode → MstNode/Record, Repo → RecordRow → Record, Repo → Event → Record,
 * and Record → Blob when blobs are mirrored; strong refs to other repos' records are not
 * followed (a like does not keep a deleted post alive: its own repo's head decides).
 *
 * Marks go to temporary tables (`gc_live_blocks`, `gc_live_blobs`) on the caller's connection,
 * so the sweep can join them against the block index in SQL; they vanish with the session.
 *
 * A mark must be complete to be acted on: a block that could not be read hides everything under
 * it, and sweeping on such a mark would delete live blocks. Every step that failed, every commit
 * or MST node whose bytes did not hash or decode, and every head that is not indexed is kept as a
 * problem and makes the mark incomplete. The one failure that is not a problem is a record the
 * block index does not hold (filter mode stores only the records it keeps; a record that is not
 * indexed has nothing to sweep).
 */
import type pg from 'pg';
import type { BlobStore } from '../storage/blobstore/types.ts';
import { copyRows } from '../storage/db/copy.ts';
import { walkGraph, type Visitor } from '../graph/engine.ts';
import type { Finding, FindingSink } from '../graph/findings.ts';
import { type Node, unhandledNode } from '../graph/nodes.ts';
import { repoPage } from '../graph/repos.ts';
import { resolveWalkGraph, type EdgeType, type NodeType } from '../graph/schema.ts';
import type { StepData } from '../graph/steps/context.ts';
import { cidToString } from '../atproto/cid.ts';

const BUFFER = 5000;

/**
 * SQL: block index row `b` is live — marked, or holding a refcount (a row references it; the
 * refcount wins over the mark, and the validate walk says which of the two is wrong). Valid on
 * the connection that holds the mark tables.
 */
export const LIVE_BLOCK = `(b.refcount > 0 OR EXISTS (SELECT 1 FROM gc_live_blocks m WHERE m.cid = b.cid))`;

/** Live block CIDs and blob CIDs, in temporary tables on one connection. */
export class MarkSet {
  readonly #client: pg.ClientBase;
  #blocks = new Map<string, Uint8Array>();
  #blobs = new Set<string>();
  #writing: Promise<void> = Promise.resolve();
  /** Rows written (a block two repos share is written once per repo). */
  blockRows = 0;
  blobRows = 0;

  private constructor(client: pg.ClientBase) {
    this.#client = client;
  }

  /** Creates (or empties) the mark tables on `client`, which must stay checked out while they are used. */
  static async open(client: pg.ClientBase): Promise<MarkSet> {
    await client.query('CREATE TEMP TABLE IF NOT EXISTS gc_live_blocks (cid bytea NOT NULL)');
    await client.query('CREATE TEMP TABLE IF NOT EXISTS gc_live_blobs (cid text NOT NULL)');
    await client.query('TRUNCATE gc_live_blocks, gc_live_blobs');
    return new MarkSet(client);
  }

  block(cid: Uint8Array): Promise<void> | undefined {
    this.#blocks.set(Buffer.from(cid.buffer, cid.byteOffset, cid.byteLength).toString('latin1'), cid);
    return this.#blocks.size >= BUFFER ? this.flush() : undefined;
  }

  blob(cid: string): Promise<void> | undefined {
    this.#blobs.add(cid);
    return this.#blobs.size >= BUFFER ? this.flush() : undefined;
  }

  /** Writes what is buffered; writes never overlap (one connection). */
  flush(): Promise<void> {
    const blocks = [...this.#blocks.values()];
    const blobs = [...this.#blobs];
    this.#blocks = new Map();
    this.#blobs = new Set();
    this.#writing = this.#writing.then(async () => {
      if (blocks.length) this.blockRows += await copyRows(this.#client, 'gc_live_blocks', ['cid'], blocks.map((c) => [c]));
      if (blobs.length) this.blobRows += await copyRows(this.#client, 'gc_live_blobs', ['cid'], blobs.map((c) => [c]));
    });
    return this.#writing;
  }

  /** Flushes and indexes the tables for the sweep's joins. */
  async seal(): Promise<void> {
    await this.flush();
    await this.#client.query('CREATE INDEX IF NOT EXISTS gc_live_blocks_cid ON gc_live_blocks (cid)');
    await this.#client.query('CREATE INDEX IF NOT EXISTS gc_live_blobs_cid ON gc_live_blobs (cid)');
    await this.#client.query('ANALYZE gc_live_blocks');
    await this.#client.query('ANALYZE gc_live_blobs');
  }
}

export interface MarkProblem {
  nodeType: string;
  key: string;
  /** `Type:key` hops from the repo. */
  route: string;
  detail: string;
}

export interface MarkOptions {
  /** Follow Record → Blob (reads every record). */
  blobs: boolean;
  /** Only repos whose row changed at or after this time (the re-mark of repos imported during the mark). */
  changedSince?: Date | undefined;
  /** Repos per walk. Default 200. */
  pageSize?: number | undefined;
  signal?: AbortSignal | undefined;
  /** Called after each page of repos. */
  onPage?: ((progress: MarkResult) => void | Promise<void>) | undefined;
  /** Called every few seconds while a page is walked. */
  tick?: (() => void) | undefined;
}

export interface MarkResult {
  repos: number;
  /** Block and blob nodes stepped (with repeats across repos). */
  blockNodes: number;
  blobNodes: number;
  /** Records named by an MST or an event that the block index does not hold. */
  unindexedRecords: number;
  /** Everything that makes the block mark incomplete; at most 100 kept, `problemCount` counts all. */
  problems: MarkProblem[];
  problemCount: number;
  /** Problems that only make the blob mark incomplete (a record that could not be read for its blob refs). */
  blobProblemCount: number;
}

export function emptyMark(): MarkResult {
  return { repos: 0, blockNodes: 0, blobNodes: 0, unindexedRecords: 0, problems: [], problemCount: 0, blobProblemCount: 0 };
}

/** Adds `b` into `a`. */
export function addMark(a: MarkResult, b: MarkResult): MarkResult {
  a.repos += b.repos;
  a.blockNodes += b.blockNodes;
  a.blobNodes += b.blobNodes;
  a.unindexedRecords += b.unindexedRecords;
  a.problemCount += b.problemCount;
  a.blobProblemCount += b.blobProblemCount;
  for (const p of b.problems) if (a.problems.length < 100) a.problems.push(p);
  return a;
}

const NODES: NodeType[] = ['Repo', 'Commit', 'MstNode', 'Record', 'RecordRow', 'Event'];
const EDGES: EdgeType[] = ['RepoToCommit', 'CommitToMstNode', 'MstNodeToMstNode', 'MstNodeToRecord', 'RepoToRecordRow', 'RecordRowToRecord', 'RepoToEvent', 'EventToRecord'];

/** Marks everything live under every repo (or those changed since `changedSince`) into `marks`. */
export async function markLive(stores: { pool: pg.Pool; store: BlobStore }, marks: MarkSet, opts: MarkOptions): Promise<MarkResult> {
  const graph = resolveWalkGraph(
    { includeNodes: opts.blobs ? [...NODES, 'Blob'] : NODES, includeEdges: opts.blobs ? [...EDGES, 'RecordToBlob'] : EDGES },
    new Set<NodeType>(['Repo']),
    [],
  );
  const total = emptyMark();
  let after: string | undefined;
  do {
    if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('mark aborted');
    const page = await repoPage(stores.pool, { slice: 0, slices: 1, after, limit: opts.pageSize ?? 200, changedSince: opts.changedSince });
    after = page.cursor;
    if (page.dids.length === 0) break;
    const result = emptyMark();
    const problem = (p: MarkProblem) => {
      result.problemCount++;
      if (result.problems.length < 100) result.problems.push(p);
    };
    const findings: FindingSink = {
      add(f: Finding) {
        if (f.nodeType === 'Record' && f.check === 'block-not-indexed') result.unindexedRecords++;
        else problem({ nodeType: f.nodeType, key: f.key, route: f.route.map((h) => h.node).join(' > '), detail: `${f.check}: ${f.detail}` });
      },
      flush: async () => {},
    };
    await walkGraph(stores, {
      roots: page.dids.map((did): Node => ({ type: 'Repo', did })),
      graph,
      visitor: markVisitor(marks, result, opts.blobs),
      findings,
      errorAsData: true,
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.tick ? { progress: { label: 'gc mark', intervalMs: 5000, emit: opts.tick } } : {}),
    });
    await marks.flush();
    result.repos = page.dids.length;
    addMark(total, result);
    await opts.onPage?.(structuredClone(total));
  } while (after !== undefined);
  return total;
}

function markVisitor(marks: MarkSet, result: MarkResult, blobs: boolean): Visitor {
  return {
    async visit(v, ctx) {
      const broken = (detail: string) => ctx.report({ check: 'gc-mark', detail });
      switch (v.node.type) {
        case 'Repo': {
          const data = v.data as StepData['Repo'];
          if (data.row?.headCid && !data.headLoc) broken(`head commit ${cidToString(data.row.headCid, 0)} is not in the block index`);
          return;
        }
        case 'Commit': {
          const data = v.data as StepData['Commit'];
          result.blockNodes++;
          if (!data.hashOk) broken('commit bytes do not hash to its CID');
          else if (!data.commit) broken(`commit does not decode: ${data.decodeError ?? 'unknown'}`);
          await marks.block(v.node.cid);
          return;
        }
        case 'MstNode': {
          const data = v.data as StepData['MstNode'];
          result.blockNodes++;
          // A broken invariant can stop the step before it found every subtree and record.
          if (!data.hashOk) broken('MST node bytes do not hash to its CID');
          else if (data.problems.length) broken(`MST node: ${data.problems.join('; ')}`);
          await marks.block(v.node.cid);
          return;
        }
        case 'Record': {
          const data = v.data as StepData['Record'];
          result.blockNodes++;
          if (blobs && (!data.hashOk || data.refsError !== null)) result.blobProblemCount++;
          await marks.block(v.node.cid);
          return;
        }
        case 'Blob':
          result.blobNodes++;
          await marks.blob(v.node.cid);
          return;
        // Reached only as the walk's way down to blocks, or not walked by the mark.
        case 'RecordRow':
        case 'Event':
        case 'Pack':
        case 'Block':
          return;
        default:
          return unhandledNode(v.node);
      }
    },
  };
}
