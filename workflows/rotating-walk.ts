/**
 * `rotatingWalk` (schedules `repowalk-rotating-scrub`, `repowalk-rotating-validate`): a scrub or
 * validate walk of the next 1/R sample of the mirror, as a child `walk` on the walk queue; the
 * rotation's offset (`maintenance/rotation.ts`) advances when the walk completes, so R runs cover
 * the whole mirror. Pause, resume and cancel are passed on to the walk.
 */
import { ParentClosePolicy, defineQuery, proxyActivities, setHandler, startChild, workflowInfo, type ChildWorkflowHandle } from '@temporalio/workflow';
import { z } from 'zod';
import type { MaintenanceActivities } from '../activities/maintenance.ts';
import type { RotationState } from '../maintenance/rotation.ts';
import { WalkInput } from '../graph/walk-input.ts';
import { controlSignals, handleControl, type ControlName } from './control.ts';
import { parseInput } from './input.ts';
import { closing, showMaintenance, type MaintenanceState } from './periodic.ts';
import { walk, type WalkProgress } from './walk.ts';

export { cancelSignal, pauseSignal, resumeSignal } from './control.ts';

const { claimRotation, completeRotation } = proxyActivities<MaintenanceActivities>({
  startToCloseTimeout: '2 minutes',
  retry: { initialInterval: '2 seconds', maximumInterval: '1 minute', maximumAttempts: 10 },
});

export const RotatingWalkInput = z.object({
  type: z.enum(['scrub', 'validate']),
  /** Sample rate R: each run walks 1/R of the mirror, R runs all of it. */
  rate: z.number().int().min(1).max(1_000_000),
  /** Task queue of the walk job, where `walk` runs. */
  walkTaskQueue: z.string().min(1),
  /** The rotation's name in job_state; default `rotating-<type>`. */
  name: z.string().min(1).max(100).optional(),
  /** More of the walk's input (slices, repair, checks, …); not its type or sampling. */
  walk: z.record(z.string(), z.unknown()).default({}),
});
export type RotatingWalkInput = z.input<typeof RotatingWalkInput>;

export interface RotatingWalkResult {
  name: string;
  rate: number;
  offset: number;
  /** Completed cycles before this run. */
  cycle: number;
  walkId: string;
  walk: WalkProgress;
  /** The rotation after this run (unchanged when the walk did not complete). */
  rotation: RotationState | undefined;
}

export interface RotatingWalkProgress {
  name: string;
  rate: number;
  state: MaintenanceState;
  /** The offset this run samples and the cycle it belongs to, once claimed. */
  offset?: number;
  cycle?: number;
  walkId: string | undefined;
}

export const rotatingWalkProgressQuery = defineQuery<RotatingWalkProgress>('progress');

/** Claims the rotation's next offset, walks that sample as a child, and advances the offset when it completes. */
export async function rotatingWalk(raw: RotatingWalkInput): Promise<RotatingWalkResult> {
  const input = parseInput(RotatingWalkInput, raw, 'rotatingWalk');
  const name = input.name ?? `rotating-${input.type}`;
  const { type: _t, sampleRate: _r, sampleOffset: _o, ...extra } = input.walk;
  // The walk's own validation, up front: a bad schedule fails now, not after claiming an offset.
  parseInput(WalkInput, { ...extra, type: input.type, sampleRate: input.rate, sampleOffset: 0 }, 'rotatingWalk.walk');
  const walkId = `${workflowInfo().workflowId}/walk`;
  let child: ChildWorkflowHandle<typeof walk> | undefined;
  let claimed: { offset: number; cycle: number } | undefined;
  let state: MaintenanceState = 'running';
  let cancelled = false;
  // The walk answers these itself; the rotation passes them on, so one id controls both.
  const forward = async (signal: ControlName) => {
    if (signal === 'cancel') cancelled = true;
    if (signal === 'pause' && state === 'running') state = 'paused';
    if (signal === 'resume' && state === 'paused') state = 'running';
    await child?.signal(controlSignals[signal]).catch(() => {});
  };
  handleControl({ pause: () => forward('pause'), resume: () => forward('resume'), cancel: () => forward('cancel') });
  setHandler(rotatingWalkProgressQuery, () => ({ name, rate: input.rate, state, ...claimed, walkId: child ? walkId : undefined }));
  showMaintenance(name, 'running');

  return closing(name, async () => {
    const c = await claimRotation({ name, rate: input.rate });
    claimed = { offset: c.offset, cycle: c.cycle };
    child = await startChild(walk, {
      workflowId: walkId,
      taskQueue: input.walkTaskQueue,
      args: [{ ...extra, type: input.type, sampleRate: input.rate, sampleOffset: c.offset }],
      parentClosePolicy: ParentClosePolicy.TERMINATE,
    });
    // A pause or cancel that came before the walk existed had no one to reach: pass it on now.
    if (cancelled) await child.signal(controlSignals.cancel);
    else if (state === 'paused') await child.signal(controlSignals.pause);
    const result = await child.result();
    const rotation = result.state === 'done' ? await completeRotation({ name, rate: input.rate, offset: c.offset, walkId }) : undefined;
    state = result.state === 'done' ? 'done' : 'cancelled';
    showMaintenance(name, state);
    return { name, rate: input.rate, offset: c.offset, cycle: c.cycle, walkId, walk: result, rotation };
  });
}
