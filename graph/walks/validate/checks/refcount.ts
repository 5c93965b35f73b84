/**
 * `refcount`: a block whose stored refcount is not the number of references that exist to it
 * (record index rows, repo heads, events), counted in the same statement as the refcount is read
 * (one snapshot, so an import committing meanwhile cannot make them disagree).
 *
 * Blocks in the packs the Repo step read in bulk, and the repo's record blocks in other packs,
 * were compared there, in Postgres and in the same snapshot as the repo's rows, and only the
 * disagreements came back (heads counted among the repos read in that batch: see
 * `refcountMismatchesInPacks`; a disagreement with fewer references than the refcount, which a
 * head of a repo outside the batch could explain, is counted again mirror-wide like the blocks
 * below before it is reported); blocks looked up one by one (outside those packs), and the head
 * commit read with its repos row, had their rows counted with the lookup (and the head its own
 * repo's head), not other repos' heads, which only a pass over `repos` finds: where that count
 * agrees with the refcount, nothing more is asked. Other blocks, and those whose count disagrees,
 * are gathered with their routes and compared when the root is done, in one statement with the
 * other roots finishing meanwhile, mirror-wide: they look each block up in the indexes on
 * `records.cid` and `events.cid`, and count every repo head.
 */
import { cidMapKey, cidWord } from '../../../blocks.ts';
import type { Route } from '../../../route.ts';
import type { RefcountScan, StepData } from '../../../steps/context.ts';
import { defineCheck } from '../check.ts';

interface RootRefcounts {
  /** The Repo step's bulk comparison. */
  scan: RefcountScan | null;
  /** Blocks outside the scanned packs, with the routes to them. */
  cids: Uint8Array[];
  routes: Route[];
}

const detail = (m: { refcount: number; refs: number }) => `refcount is ${m.refcount}, but ${m.refs} stored rows reference the block`;

export const refcount = defineCheck({
  name: 'refcount',
  nodeTypes: ['Repo', 'Commit', 'MstNode', 'Record', 'Block'],
  needs: { refcounts: true },
  rootState: (): RootRefcounts => ({ scan: null, cids: [], routes: [] }),
  visit(v, ctx, state) {
    if (v.node.type === 'Repo') {
      // Kept whether or not the Repo node is sampled: its blocks may be.
      state.scan = (v.data as StepData['Repo']).refcounts;
      return;
    }
    if (!ctx.sampled) return;
    const { cid } = v.node;
    const loc = (v.data as StepData['Block']).loc;
    // Looked up alone (or a head read with its repos row), its rows counted in the same
    // statement; other repos' heads were not (see `BlockLoc.refs`), so a disagreement is counted
    // again mirror-wide when the root is done, and reported from that count.
    if (loc.refs !== undefined && loc.refs === loc.refcount) return;
    const scan = state.scan;
    if (loc.refs === undefined && scan && (scan.packs.has(loc.packId) || (scan.blockWords.has(cidWord(cid)) && scan.blocks.has(cidMapKey(cid))))) {
      const m = scan.mismatchWords.has(cidWord(cid)) ? scan.mismatches.get(cidMapKey(cid)) : undefined;
      if (!m) return;
      // Fewer references than the refcount may be a head the batch's count left out (another
      // repo's, naming this block too): such a block is counted again mirror-wide when the root
      // is done, as the blocks outside the scan are. More references than the refcount is a
      // finding whatever else counts.
      if (m.refs >= m.refcount) return void ctx.report({ check: 'refcount', detail: detail(m) });
    }
    state.cids.push(cid);
    state.routes.push(ctx.route);
  },
  async rootDone(state, ctx, env) {
    if (state.cids.length === 0) return;
    const found = await Promise.all(state.cids.map((cid) => env.refcounts.load(cid)));
    for (const [i, m] of found.entries()) {
      if (!m) continue;
      const route = state.routes[i]!;
      ctx.report({ check: 'refcount', route, node: route.node, detail: detail(m) });
    }
  },
});
