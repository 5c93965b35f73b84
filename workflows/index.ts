/**
 * Every workflow repowalk registers, and nothing else: the worker bundles this file, the job
 * registry (`workers/jobs.ts`) names its workflows by these exports, and the tests' workers
 * bundle it too. Each workflow's contract (input schema, signals, queries) is exported by its
 * own module.
 */
export { ping } from './ping.ts';
export { backfill } from './backfill.ts';
export { backfillRepo } from './backfill-repo.ts';
export { walk } from './walk.ts';
export { walkSlice } from './walk-slice.ts';
export { resyncSweep } from './resync-sweep.ts';
export { goneRecheck } from './gone-recheck.ts';
export { retention } from './retention.ts';
export { gc } from './gc.ts';
export { rotatingWalk } from './rotating-walk.ts';
export { stats } from './stats.ts';
