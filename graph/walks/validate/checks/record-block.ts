/** `record-block`: a record index row naming a block the block index lacks, or whose pack has no packs row. */
import { cidToString } from '../../../../atproto/cid.ts';
import { defineCheck } from '../check.ts';

export const recordBlock = defineCheck({
  name: 'record-block',
  nodeTypes: ['RecordRow'],
  needs: {},
  visit(v, ctx) {
    const row = v.data.row;
    if (!ctx.sampled || !row) return;
    if (!row.loc) ctx.report({ check: 'record-block', detail: `names block ${cidToString(row.cid, 0)}, which is not in the block index` });
    else if (row.loc.packKey === null) ctx.report({ check: 'record-block', detail: `block ${cidToString(row.cid, 0)} is indexed in pack ${row.loc.packId}, which has no packs row` });
  },
});
