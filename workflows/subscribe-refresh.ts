/**
 * `refresh`: brings up to date the repos no subscription covers, page by page (`refreshPage`:
 * getLatestCommit, then getRepo?since= only when the rev moved; a full backfill when the
 * incremental path cannot complete). Meant to run on a Temporal Schedule; ends with its totals.
 */
import { proxyActivities, setCurrentDetails, upsertSearchAttributes } from '@temporalio/workflow';
import { z } from 'zod';
import type { SyncActivities } from '../activities/sync.ts';
import { BackfillSettings } from '../backfill/settings.ts';
import { parseInput } from './input.ts';
import { RepowalkKind, RepowalkState } from './search-attributes.ts';

export const RefreshInput = z.object({
  settings: BackfillSettings.default(BackfillSettings.parse({})),
  backfillTaskQueue: z.string().min(1),
  pageSize: z.number().int().min(1).max(10_000).default(200),
  /** PDS origins a subscription covers (those with a recently moved cursor are skipped anyway). */
  coveredPds: z.array(z.string().url()).default([]),
});
export type RefreshInput = z.input<typeof RefreshInput>;

export interface RefreshTotals {
  pages: number;
  outcomes: Record<string, number>;
  backfills: number;
}

const { refreshPage } = proxyActivities<SyncActivities>({
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '5 seconds', maximumInterval: '5 minutes' },
});

export async function refresh(rawInput: RefreshInput): Promise<RefreshTotals> {
  const input = parseInput(RefreshInput, rawInput, 'refresh');
  const totals: RefreshTotals = { pages: 0, outcomes: {}, backfills: 0 };
  upsertSearchAttributes([
    { key: RepowalkKind, value: 'refresh' },
    { key: RepowalkState, value: 'running' },
  ]);
  let after: string | undefined;
  do {
    const page = await refreshPage({ after, limit: input.pageSize, settings: input.settings, backfillTaskQueue: input.backfillTaskQueue, coveredPds: input.coveredPds });
    totals.pages++;
    for (const [k, n] of Object.entries(page.outcomes)) totals.outcomes[k] = (totals.outcomes[k] ?? 0) + n;
    totals.backfills += page.backfills;
    after = page.next;
    setCurrentDetails(`refreshing: ${totals.pages} pages, ${Object.entries(totals.outcomes).map(([k, n]) => `${k} ${n}`).join(', ') || 'nothing yet'}`);
  } while (after !== undefined);
  upsertSearchAttributes([{ key: RepowalkState, value: 'done' }]);
  return totals;
}
