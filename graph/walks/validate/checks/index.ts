/**
 * The validate checks, one module each, keyed by name: a name in `VALIDATE_CHECKS` without a
 * check here (or a check under another name) does not compile.
 *
 * To add a check:
 * 1. Name it: add the name to `VALIDATE_CHECKS` in `graph/walks/names.ts` (workflow input and
 *    `--check` accept names from there), and a row to the README's validate table.
 * 2. Write it: `checks/<name>.ts` exporting `defineCheck({ name, nodeTypes, needs, visit,
 *    rootState?, rootDone? })` — the node types it looks at, the loads it needs from the steps
 *    (a load no step makes yet is a new `StepNeeds` field, made in its step), what it reports on
 *    a visit, and what on a whole root. SQL it needs goes in `storage/validate-queries.ts`.
 * 3. Register it: a row in `CHECKS` below.
 * 4. Test it: in `graph/walks/validate.test.ts`, a fault this check alone finds, and that fault
 *    in the list the every-check test plants (which fails while a check finds nothing there).
 */
import type { ValidateCheck } from '../../names.ts';
import type { AnyCheck } from '../check.ts';
import { blockHash } from './block-hash.ts';
import { commitSignature } from './commit-signature.ts';
import { eventBlock } from './event-block.ts';
import { indexMst } from './index-mst.ts';
import { mst } from './mst.ts';
import { recordBlock } from './record-block.ts';
import { refcount } from './refcount.ts';
import { repoState } from './repo-state.ts';
import { strongRef } from './strong-ref.ts';

export const CHECKS: { readonly [N in ValidateCheck]: AnyCheck<N> } = {
  'block-hash': blockHash,
  'commit-signature': commitSignature,
  mst,
  'index-mst': indexMst,
  'record-block': recordBlock,
  refcount,
  'event-block': eventBlock,
  'repo-state': repoState,
  'strong-ref': strongRef,
};
