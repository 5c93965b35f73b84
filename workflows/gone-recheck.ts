/**
 * `goneRecheck` (schedule `repowalk-gone-recheck`): asks `getRepoStatus` of every gone repo whose
 * re-check time has passed (maintenance/gone-check.ts) and starts `backfill/<did>` only for those
 * no longer inactive and with none running, so a deactivated or taken-down account that came back
 * is mirrored again without downloading the ones still gone. The sweep itself is `sweep.ts`.
 */
import { sweep, type SweepInput, type SweepProgress } from './sweep.ts';

export { SweepInput, sweepProgressQuery, type SweepProgress, cancelSignal, pauseSignal, resumeSignal } from './sweep.ts';

export async function goneRecheck(raw: SweepInput): Promise<SweepProgress> {
  return sweep('gone', 'gone-recheck', raw);
}
