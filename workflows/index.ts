/** Every workflow repowalk registers; the worker bundles this file. */
export { ping } from './ping.ts';
export { backfill } from './backfill.ts';
export { backfillRepo } from './backfill-repo.ts';
