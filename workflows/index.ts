/** Every workflow repowalk registers; the worker bundles this file. */
export { ping } from './ping.ts';
export { backfill } from './backfill.ts';
export { backfillRepo } from './backfill-repo.ts';
export { walk } from './walk.ts';
export { walkSlice } from './walk-slice.ts';
export { resyncSweep, goneRecheck, retention, gc, rotatingWalk, stats } from './maintenance.ts';
export { subscribe } from './subscribe.ts';
export { refresh } from './subscribe-refresh.ts';
