/**
 * `mst`: an MST node that breaks an invariant of the tree (the step checks each node against
 * what its parent passed down, so the walk never holds a whole tree), and a head commit whose
 * data root is not the one its repos row records.
 */
import { cidToString } from '../../../../atproto/cid.ts';
import { unhandledNode } from '../../../nodes.ts';
import type { StepData } from '../../../steps/context.ts';
import { defineCheck } from '../check.ts';

export const mst = defineCheck({
  name: 'mst',
  nodeTypes: ['Commit', 'MstNode'],
  needs: { blockBytes: true },
  visit(v, ctx) {
    if (!ctx.sampled) return;
    switch (v.node.type) {
      case 'Commit': {
        const data = v.data as StepData['Commit'];
        const repo = v.node.repo;
        if (!data.hashOk || !data.commit || !repo?.dataCid) return;
        const stored = cidToString(repo.dataCid, 0);
        if (stored !== data.commit.data) ctx.report({ check: 'mst', detail: `the commit's data root is ${data.commit.data}, repos.data_cid is ${stored}` });
        return;
      }
      case 'MstNode': {
        const data = v.data as StepData['MstNode'];
        if (data.problems.length > 0) ctx.report({ check: 'mst', detail: data.problems.join('; ') });
        return;
      }
      default:
        return unhandledNode(v.node);
    }
  },
});
