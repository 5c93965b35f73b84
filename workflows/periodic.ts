/**
 * What the periodic (maintenance) workflows share: RepowalkKind = `maintenance/<name>` and
 * RepowalkState kept current, and the state they end in when they throw. Each workflow is a file
 * of its own (`resync-sweep.ts`, `gone-recheck.ts`, `retention.ts`, `gc.ts`, `rotating-walk.ts`,
 * `stats.ts`); Temporal Schedules start them (`schedules/schedules.ts`) on the maintenance task
 * queue, or an operator does with `temporal workflow start --input '…'`.
 */
import { CancellationScope, ContinueAsNew, isCancellation, upsertSearchAttributes } from '@temporalio/workflow';
import { RepowalkKind, RepowalkState } from './search-attributes.ts';

export type MaintenanceState = 'running' | 'paused' | 'done' | 'cancelled' | 'failed';

export function showMaintenance(name: string, state: MaintenanceState): void {
  upsertSearchAttributes([
    { key: RepowalkKind, value: `maintenance/${name}` },
    { key: RepowalkState, value: state },
  ]);
}

/** Sets the state attribute to failed (or cancelled) on the way out of a workflow that threw. */
export async function closing<T>(name: string, body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (err) {
    if (err instanceof ContinueAsNew) throw err;
    await CancellationScope.nonCancellable(async () => showMaintenance(name, isCancellation(err) ? 'cancelled' : 'failed'));
    throw err;
  }
}
