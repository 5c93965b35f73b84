/**
 * `retention` (schedule `repowalk-retention`): trims the events past their retention (ephemeral
 * mode), lowering the refcounts they held, in batches that each commit (`maintenance/retention.ts`).
 */
import { defineQuery, proxyActivities, setHandler } from '@temporalio/workflow';
import type { z } from 'zod';
import type { MaintenanceActivities } from '../activities/maintenance.ts';
import type { RetentionResult } from '../maintenance/retention.ts';
import { RetentionSettings } from '../maintenance/settings.ts';
import { parseInput } from './input.ts';
import { closing, showMaintenance } from './periodic.ts';

/** The input: retention's settings (`maintenance/settings.ts`), which the activity takes as parsed. */
export const RetentionInput = RetentionSettings;
export type RetentionInput = z.input<typeof RetentionInput>;

export interface RetentionProgress {
  state: 'running';
  startedAt: string;
}

export const retentionProgressQuery = defineQuery<RetentionProgress>('progress');

const { trimExpiredEvents } = proxyActivities<MaintenanceActivities>({
  startToCloseTimeout: '6 hours',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '30 seconds', maximumInterval: '10 minutes', maximumAttempts: 5 },
});

export async function retention(raw: RetentionInput = {}): Promise<RetentionResult> {
  const input = parseInput(RetentionInput, raw, 'retention');
  const startedAt = new Date().toISOString();
  setHandler(retentionProgressQuery, () => ({ state: 'running', startedAt }));
  showMaintenance('retention', 'running');
  return closing('retention', async () => {
    const result = await trimExpiredEvents({ batchSize: input.batchSize, maxBatches: input.maxBatches });
    showMaintenance('retention', 'done');
    return result;
  });
}
