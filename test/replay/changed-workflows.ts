/**
 * A workflow bundle for replay.test.ts's check that a replay can fail: `backfillRepo` as a
 * careless change would leave it, its first attempt moved behind a timer.
 */
import { proxyActivities, sleep } from '@temporalio/workflow';
import type { BackfillActivities } from '../../activities/backfill.ts';
import type { BackfillRepoInput } from '../../workflows/backfill-repo.ts';

const { backfillRepoOnce } = proxyActivities<BackfillActivities>({ startToCloseTimeout: '15 minutes' });

export async function backfillRepo(input: BackfillRepoInput): Promise<void> {
  await sleep('1 second');
  await backfillRepoOnce(input.did, input.settings as never);
}
