/**
 * `gc` (schedule `repowalk-gc`): mark (a walk from every repo head and live event), sweep, repack,
 * blobs, orphans: see `maintenance/gc.ts`. The `cancel` signal (like cancelling the workflow)
 * stops the run at its next safe point.
 */
import { CancellationScope, defineQuery, isCancellation, proxyActivities, setHandler } from '@temporalio/workflow';
import type { z } from 'zod';
import type { MaintenanceActivities } from '../activities/maintenance.ts';
import type { GcReport } from '../maintenance/gc.ts';
import { GcSettings } from '../maintenance/settings.ts';
import { handleControl } from './control.ts';
import { parseInput } from './input.ts';
import { closing, showMaintenance } from './periodic.ts';

export { cancelSignal } from './control.ts';

/** The input: GC's settings (`maintenance/settings.ts`), which the activity takes as parsed. */
export const GcInput = GcSettings;
export type GcInput = z.input<typeof GcInput>;

export type GcOutcome = ({ state: 'done' } & GcReport) | { state: 'cancelled' };

export interface GcProgress {
  state: 'running' | 'cancelled';
  startedAt: string;
  input: GcSettings;
}

export const gcProgressQuery = defineQuery<GcProgress>('progress');

const { collectGarbage } = proxyActivities<MaintenanceActivities>({
  startToCloseTimeout: '24 hours',
  heartbeatTimeout: '5 minutes',
  retry: { initialInterval: '30 seconds', maximumInterval: '10 minutes', maximumAttempts: 5 },
});

export async function gc(raw: GcInput = {}): Promise<GcOutcome> {
  const input = parseInput(GcInput, raw, 'gc');
  const startedAt = new Date().toISOString();
  let cancelled = false;
  const scope = new CancellationScope();
  handleControl({
    cancel: () => {
      cancelled = true;
      scope.cancel();
    },
  });
  setHandler(gcProgressQuery, () => ({ state: cancelled ? 'cancelled' : 'running', startedAt, input }));
  showMaintenance('gc', 'running');
  return closing('gc', async () => {
    try {
      const report = await scope.run(() => collectGarbage(input));
      showMaintenance('gc', 'done');
      return { state: 'done', ...report };
    } catch (err) {
      if (!(cancelled && isCancellation(err))) throw err;
      showMaintenance('gc', 'cancelled');
      return { state: 'cancelled' };
    }
  });
}
