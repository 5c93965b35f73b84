/**
 * `stats` (schedule `repowalk-stats`): counts the mirror (repos by state, records, blocks, packs,
 * bytes, …) into job_state 'stats', where the metrics and `repowalk` commands read it.
 */
import { defineQuery, proxyActivities, setHandler } from '@temporalio/workflow';
import type { MaintenanceActivities } from '../activities/maintenance.ts';
import type { MirrorStats } from '../maintenance/stats.ts';
import { closing, showMaintenance } from './periodic.ts';

export interface StatsProgress {
  state: 'running';
}

export const statsProgressQuery = defineQuery<StatsProgress>('progress');

const { collectStats } = proxyActivities<MaintenanceActivities>({
  startToCloseTimeout: '2 minutes',
  retry: { initialInterval: '2 seconds', maximumInterval: '1 minute', maximumAttempts: 10 },
});

export async function stats(): Promise<MirrorStats> {
  showMaintenance('stats', 'running');
  setHandler(statsProgressQuery, () => ({ state: 'running' }));
  return closing('stats', async () => {
    const s = await collectStats();
    showMaintenance('stats', 'done');
    return s;
  });
}
