/**
 * `index-mst`: the record index and the MST leaves under the head disagree — a path in one and
 * not the other, or the same path with different CIDs.
 *
 * A check of a root's sampled Repo node over the leaves of every MstNode under it: it needs the
 * whole tree walked (CommitToMstNode and MstNodeToMstNode), and is not judged — but counted as
 * `validate.index-mst.skipped` — for a root where a step failed or the tree could not be read
 * whole.
 *
 * Streamed, so that memory does not grow with the tree: each leaf is matched against the record
 * index as its MST node is visited, and only what disagrees is kept. The index stays as the Repo
 * step read it (packed, `PackedRecords`), beside a hash table of its rows by a seeded 64-bit hash
 * of their paths (17 to 25 bytes a row) and a byte a row for "a leaf matched it". Holding the
 * index as rows and every leaf until the root was done took the validate walk of a repo of a
 * million records to a peak RSS of 1,659 MB; streamed, 902 MB (most of it the 264 MB pack, held
 * whole, and the block locations; `bench/growth-mirror.ts --step walk`).
 */
import { cidToString } from '../../../../atproto/cid.ts';
import { pair, pathHash } from '../../../hash.ts';
import { type Node, unhandledNode } from '../../../nodes.ts';
import type { PackedRecords } from '../../../packed.ts';
import type { StepData } from '../../../steps/context.ts';
import { defineCheck } from '../check.ts';

/** A repo's record index by path: open addressing on the first hash lane, the second one checked too. */
class IndexByPath {
  readonly records: PackedRecords;
  readonly #lane0: Int32Array;
  readonly #lane1: Int32Array;
  /** Row + 1 per slot; 0 is an empty slot. */
  readonly #slots: Int32Array;
  readonly #mask: number;
  /** Per row: 1 once a leaf with its path was seen. */
  readonly matched: Uint8Array;

  constructor(records: PackedRecords) {
    const n = records.length;
    this.records = records;
    this.#lane0 = new Int32Array(n);
    this.#lane1 = new Int32Array(n);
    this.matched = new Uint8Array(n);
    let size = 8;
    while (size < n * 2) size *= 2;
    this.#slots = new Int32Array(size);
    this.#mask = size - 1;
    records.forEachPath((row, path) => {
      pathHash(path);
      this.#lane0[row] = pair[0]!;
      this.#lane1[row] = pair[1]!;
      let slot = pair[0]! & this.#mask;
      while (this.#slots[slot] !== 0) slot = (slot + 1) & this.#mask;
      this.#slots[slot] = row + 1;
    });
  }

  /** The row whose path is `path`, or -1. */
  find(path: string): number {
    pathHash(path);
    const h0 = pair[0]!;
    const h1 = pair[1]!;
    for (let slot = h0 & this.#mask; this.#slots[slot] !== 0; slot = (slot + 1) & this.#mask) {
      const row = this.#slots[slot]! - 1;
      if (this.#lane0[row] === h0 && this.#lane1[row] === h1) return row;
    }
    return -1;
  }
}

/** What the check gathers for one root; `due` once the sampled Repo node's index was read. */
interface RootLeaves {
  due: boolean;
  did: string;
  index: IndexByPath | null;
  /** Index rows whose leaf has another CID: row → the leaf's CID. */
  differs: Map<number, Uint8Array>;
  /** Leaves with no index row, in the order they were visited. */
  unindexed: { path: string; cid: Uint8Array }[];
  /** The head was walked, so the leaves are the tree's. */
  sawCommit: boolean;
  /** A node of the tree could not be read whole: the leaves are not the tree's. */
  broken: boolean;
}

export const indexMst = defineCheck({
  name: 'index-mst',
  nodeTypes: ['Repo', 'Commit', 'MstNode'],
  needs: { recordIndex: true, blockBytes: true },
  canJudge: (graph) => !graph || (graph.edges.has('CommitToMstNode') && graph.edges.has('MstNodeToMstNode')),
  rootState: (): RootLeaves => ({ due: false, did: '', index: null, differs: new Map(), unindexed: [], sawCommit: false, broken: false }),
  // Gathers from every node, sampled or not: the comparison is the sampled Repo node's check.
  visit(v, ctx, l) {
    switch (v.node.type) {
      case 'Repo': {
        const data = v.data as StepData['Repo'];
        if (ctx.sampled && data.recordRows && data.row?.headCid) {
          l.due = true;
          l.did = data.row.did;
          l.index = new IndexByPath(data.recordRows);
        }
        return;
      }
      case 'Commit':
        if (l.due && v.node.repo?.did === l.did) l.sawCommit = (v.data as StepData['Commit']).commit !== null;
        return;
      case 'MstNode': {
        const data = v.data as StepData['MstNode'];
        if (!l.due) return;
        if (!data.bytes || !data.hashOk || data.problems.length > 0) l.broken = true;
        // Once broken the root is not judged: nothing more to gather.
        if (l.broken) return;
        const index = l.index!;
        for (const leaf of data.leaves) {
          const row = index.find(leaf.path);
          if (row < 0) l.unindexed.push(leaf);
          else {
            // A path twice in the tree breaks its key order, which the MST check finds.
            index.matched[row] = 1;
            if (!index.records.cidEquals(row, leaf.cid)) l.differs.set(row, leaf.cid);
          }
        }
        return;
      }
      default:
        return unhandledNode(v.node);
    }
  },
  rootDone(l, ctx) {
    if (!l.due) return;
    if (ctx.incomplete || !l.sawCommit || l.broken) {
      ctx.count('validate.index-mst.skipped');
      return;
    }
    const index = l.index!;
    const row = (path: string): Node => {
      const slash = path.indexOf('/');
      return { type: 'RecordRow', did: l.did, collection: path.slice(0, slash), rkey: path.slice(slash + 1) };
    };
    const b32 = (cid: Uint8Array) => cidToString(cid, 0);
    const { matched, records } = index;
    // The index's side in index order, then the leaves the index lacks in the order visited.
    for (let i = 0; i < matched.length; i++) {
      const leaf = l.differs.get(i);
      if (matched[i] === 1 && leaf === undefined) continue;
      const r = records.row(i);
      const path = `${r.collection}/${r.rkey}`;
      if (matched[i] === 0) ctx.report({ check: 'index-mst', node: row(path), detail: `in the record index (${b32(r.cid)}) but not in the MST under the head` });
      else ctx.report({ check: 'index-mst', node: row(path), detail: `the record index says ${b32(r.cid)}, the MST says ${b32(leaf!)}` });
    }
    for (const leaf of l.unindexed) ctx.report({ check: 'index-mst', node: row(leaf.path), detail: `in the MST under the head (${b32(leaf.cid)}) but not in the record index` });
  },
});
