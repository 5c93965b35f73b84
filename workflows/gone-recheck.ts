/**
 * `goneRecheck` (schedule `repowalk-gone-recheck`): starts `backfill/<did>` for every gone repo
 * whose re-check time has passed and that has none running, so a deactivated or taken-down
 * account that came back is mirrored again. The sweep itself is `sweep.ts`.
 */
import { sweep, type SweepInput, type SweepProgress } from './sweep.ts';

export { SweepInput, sweepProgressQuery, type SweepProgress, cancelSignal, pauseSignal, resumeSignal } from './sweep.ts';

export async function goneRecheck(raw: SweepInput): Promise<SweepProgress> {
  return sweep('gone', 'gone-recheck', raw);
}
