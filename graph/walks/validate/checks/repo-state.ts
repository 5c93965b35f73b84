/**
 * `repo-state`: a repos row at odds with itself (status vs head), with its head commit (rev,
 * the head's block), with its record index (rows of a deleted repo) or with its counts
 * (`records_count`, `collection_counts`).
 */
import { cidToString } from '../../../../atproto/cid.ts';
import { unhandledNode } from '../../../nodes.ts';
import type { StepData } from '../../../steps/context.ts';
import { defineCheck } from '../check.ts';

export const repoState = defineCheck({
  name: 'repo-state',
  nodeTypes: ['Repo', 'Commit'],
  needs: { recordIndex: true, collectionCounts: true },
  visit(v, ctx) {
    if (!ctx.sampled) return;
    switch (v.node.type) {
      case 'Repo': {
        const problems = repoStateProblems(v.data as StepData['Repo']);
        if (problems.length) ctx.report({ check: 'repo-state', detail: problems.join('; ') });
        return;
      }
      case 'Commit': {
        const data = v.data as StepData['Commit'];
        const repo = v.node.repo;
        if (data.hashOk && data.commit && repo && repo.rev !== data.commit.rev) {
          ctx.report({ check: 'repo-state', detail: `the head commit's rev is ${data.commit.rev}, repos.rev is ${repo.rev}` });
        }
        return;
      }
      default:
        return unhandledNode(v.node);
    }
  },
});

/** What is wrong with a repo's row, record index and counts, as sentences. */
export function repoStateProblems(data: StepData['Repo']): string[] {
  const row = data.row;
  if (!row) return ['no repos row'];
  const problems: string[] = [];
  const records = data.recordRows;
  if (row.status === 'active') {
    if (!row.headCid) problems.push('active without a head');
    else if (!data.headLoc) problems.push(`head commit ${cidToString(row.headCid, 0)} is not in the block index`);
    else if (data.headLoc.packKey === null) problems.push(`head commit is indexed in pack ${data.headLoc.packId}, which has no packs row`);
  }
  if (row.status === 'deleted' || row.status === 'dropped') {
    if (row.headCid) problems.push(`${row.status} but still has a head`);
    if (records && records.length > 0) problems.push(`${row.status} but still has ${records.length} record index rows`);
  }
  if (!row.headCid && records && records.length > 0) problems.push(`no head but ${records.length} record index rows`);
  if (records) {
    if (records.length !== row.recordsCount) problems.push(`records_count is ${row.recordsCount}, the record index holds ${records.length}`);
    if (data.collectionCounts) {
      const actual = records.collectionCounts();
      const all = new Set([...actual.keys(), ...data.collectionCounts.keys()]);
      for (const c of [...all].sort()) {
        const want = actual.get(c) ?? 0;
        const have = data.collectionCounts.get(c) ?? 0;
        if (want !== have) problems.push(`collection_counts says ${have} ${c}, the record index holds ${want}`);
      }
    }
  }
  return problems;
}
