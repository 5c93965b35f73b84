/**
 * `strong-ref` (info): a record's strong ref into a repo we mirror, naming a record version whose
 * block we do not hold. Refs into repos we do not mirror lead nowhere and are not findings.
 */
import { cidFromString } from '../../../../atproto/cid.ts';
import { defineCheck } from '../check.ts';

export const strongRef = defineCheck({
  name: 'strong-ref',
  nodeTypes: ['Record'],
  needs: { recordRefs: true },
  visit(v, ctx, _state, env) {
    const refs = v.data.refs?.strongRefs;
    if (!ctx.sampled || !refs || refs.length === 0) return;
    ctx.defer(async () => {
      const unresolved: string[] = [];
      for (const ref of refs) {
        if (!(await env.mirrored.load(ref.did))) continue;
        const cid = cidFromString(ref.cid);
        if (!cid || !(await env.indexed.load(cid))) unresolved.push(`${ref.uri} (${ref.cid})`);
      }
      if (unresolved.length) {
        ctx.report({ check: 'strong-ref', severity: 'info', detail: `strong refs into mirrored repos whose record version is not stored: ${unresolved.join(', ')}` });
      }
    });
  },
});
