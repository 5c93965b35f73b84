/** `event-block`: an event naming a block the block index lacks, or whose pack has no packs row. */
import { cidToString } from '../../../../atproto/cid.ts';
import { defineCheck } from '../check.ts';

export const eventBlock = defineCheck({
  name: 'event-block',
  nodeTypes: ['Event'],
  needs: {},
  visit(v, ctx) {
    const row = v.data.row;
    // A delete (or an account event) names no block.
    if (!ctx.sampled || !row?.cid) return;
    if (!row.loc) ctx.report({ check: 'event-block', detail: `${row.kind} event names block ${cidToString(row.cid, 0)}, which is not in the block index` });
    else if (row.loc.packKey === null) ctx.report({ check: 'event-block', detail: `block ${cidToString(row.cid, 0)} is indexed in pack ${row.loc.packId}, which has no packs row` });
  },
});
