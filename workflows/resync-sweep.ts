/**
 * `resyncSweep` (schedule `repowalk-resync-sweep`): starts `backfill/<did>` for every repo in
 * resync whose retry time has passed and that has none running (also one terminated by hand).
 * The sweep itself is `sweep.ts`.
 */
import { sweep, type SweepInput, type SweepProgress } from './sweep.ts';

export { SweepInput, sweepProgressQuery, type SweepProgress, cancelSignal, pauseSignal, resumeSignal } from './sweep.ts';

export async function resyncSweep(raw: SweepInput): Promise<SweepProgress> {
  return sweep('resync', 'resync-sweep', raw);
}
