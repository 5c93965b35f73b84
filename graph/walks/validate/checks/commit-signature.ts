/**
 * `commit-signature`: a head commit that does not decode as a v3 commit, or whose signature does
 * not verify with the signing key stored in its repos row.
 */
import { cidToString } from '../../../../atproto/cid.ts';
import { storedSigningKey } from '../../../../storage/validate-queries.ts';
import { defineCheck } from '../check.ts';
import { verifyCommitSignatureOffThread } from '../signatures.ts';

export const commitSignature = defineCheck({
  name: 'commit-signature',
  nodeTypes: ['Commit'],
  needs: {},
  visit(v, ctx, _state, env) {
    const { node, data } = v;
    // Bytes that do not hash are block-hash's finding; nothing was decoded from them.
    if (!ctx.sampled || !data.hashOk) return;
    if (data.decodeError !== null) {
      ctx.report({ check: 'commit-signature', detail: `not a valid commit: ${data.decodeError}` });
      return;
    }
    const commit = data.commit;
    if (!commit) return;
    ctx.defer(async () => {
      const key = node.repo?.signingKey ?? (await storedSigningKey(env.pool, commit.did));
      if (!key) {
        ctx.report({ check: 'commit-signature', detail: `no signing key stored for ${commit.did}` });
        return;
      }
      try {
        await verifyCommitSignatureOffThread(commit, cidToString(node.cid, 0), key);
      } catch (err) {
        ctx.report({ check: 'commit-signature', detail: (err as Error).message });
      }
    });
  },
});
