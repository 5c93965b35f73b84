/** `block-hash`: bytes in a pack that do not hash to the CID of the block they are indexed as. */
import { cidToString } from '../../../../atproto/cid.ts';
import { defineCheck } from '../check.ts';

export const blockHash = defineCheck({
  name: 'block-hash',
  nodeTypes: ['Commit', 'MstNode', 'Record', 'Block'],
  needs: { blockBytes: true },
  visit(v, ctx) {
    const data = v.data;
    if (!ctx.sampled || !data.bytes || data.hashOk) return;
    ctx.report({
      check: 'block-hash',
      detail: `bytes at ${data.loc.packKey}+${data.loc.offset} (${data.loc.length} bytes) do not hash to ${cidToString(v.node.cid, 0)}`,
    });
  },
});
