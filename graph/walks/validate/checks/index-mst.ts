/**
 * `index-mst`: the record index and the MST leaves under the head disagree — a path in one and
 * not the other, or the same path with different CIDs.
 *
 * A check of a root's sampled Repo node over the leaves of every MstNode under it: it needs the
 * whole tree walked (CommitToMstNode and MstNodeToMstNode), and is not judged — but counted as
 * `validate.index-mst.skipped` — for a root where a step failed or the tree could not be read
 * whole. It compares sums of a seeded hash of each (path, CID) and matches the two sides up
 * only when they differ.
 */
import { cidToString } from '../../../../atproto/cid.ts';
import { cidMapKey } from '../../../blocks.ts';
import { pair, pairHash } from '../../../hash.ts';
import { type Node, unhandledNode } from '../../../nodes.ts';
import type { IndexRow, StepData } from '../../../steps/context.ts';
import { defineCheck } from '../check.ts';

/** What the check gathers for one root; `due` once the sampled Repo node's index was read. */
interface RootLeaves {
  due: boolean;
  did: string;
  index: IndexRow[];
  /** The leaves of every MST node under the head, as the steps returned them. */
  leaves: { path: string; cid: Uint8Array }[][];
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
  rootState: (): RootLeaves => ({ due: false, did: '', index: [], leaves: [], sawCommit: false, broken: false }),
  // Gathers from every node, sampled or not: the comparison is the sampled Repo node's check.
  visit(v, ctx, l) {
    switch (v.node.type) {
      case 'Repo': {
        const data = v.data as StepData['Repo'];
        if (ctx.sampled && data.records && data.row?.headCid) {
          l.due = true;
          l.did = data.row.did;
          l.index = data.records;
        }
        return;
      }
      case 'Commit':
        if (l.due && v.node.repo?.did === l.did) l.sawCommit = (v.data as StepData['Commit']).commit !== null;
        return;
      case 'MstNode': {
        const data = v.data as StepData['MstNode'];
        if (!l.due) return;
        l.leaves.push(data.leaves);
        if (!data.bytes || !data.hashOk || data.problems.length > 0) l.broken = true;
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
    const row = (path: string): Node => {
      const slash = path.indexOf('/');
      return { type: 'RecordRow', did: l.did, collection: path.slice(0, slash), rkey: path.slice(slash + 1) };
    };
    // First compare sums of a seeded hash of each (path, CID): equal sums and counts mean the
    // same pairs, and cost no Map. Only when they differ are the two sides matched up.
    let count = 0;
    let a = 0;
    let b = 0;
    for (const r of l.index) {
      pairHash(`${r.collection}/${r.rkey}`, r.cid);
      a = (a + pair[0]!) | 0;
      b = (b + pair[1]!) | 0;
    }
    for (const group of l.leaves) {
      for (const leaf of group) {
        pairHash(leaf.path, leaf.cid);
        a = (a - pair[0]!) | 0;
        b = (b - pair[1]!) | 0;
        count++;
      }
    }
    if (a === 0 && b === 0 && count === l.index.length) return;
    const index = new Map(l.index.map((r) => [`${r.collection}/${r.rkey}`, cidMapKey(r.cid)]));
    const leaves = new Map(l.leaves.flatMap((g) => g.map((x) => [x.path, cidMapKey(x.cid)] as const)));
    // CIDs are compared as their bytes (`cidMapKey`) and spelled out only for a finding.
    const b32 = (key: string) => cidToString(Buffer.from(key, 'latin1'), 0);
    for (const [path, cid] of index) {
      const leaf = leaves.get(path);
      if (leaf === undefined) ctx.report({ check: 'index-mst', node: row(path), detail: `in the record index (${b32(cid)}) but not in the MST under the head` });
      else if (leaf !== cid) ctx.report({ check: 'index-mst', node: row(path), detail: `the record index says ${b32(cid)}, the MST says ${b32(leaf)}` });
    }
    for (const [path, cid] of leaves) {
      if (!index.has(path)) ctx.report({ check: 'index-mst', node: row(path), detail: `in the MST under the head (${b32(cid)}) but not in the record index` });
    }
  },
});
