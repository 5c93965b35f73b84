/**
 * The control contract of every long-running workflow: `pause` (no new work starts; what runs
 * finishes), `resume`, and `cancel` (stop at the next safe point, with cleanup; the workflow then
 * completes with its state `cancelled`). Defined once, so that `handle.signal(pauseSignal)`
 * reaches any of them. The wire names are what operators type
 * (`temporal workflow signal --name pause`, README "Walk") and must not change.
 */
import { defineSignal, setHandler } from '@temporalio/workflow';

export const pauseSignal = defineSignal('pause');
export const resumeSignal = defineSignal('resume');
export const cancelSignal = defineSignal('cancel');

/** The control signals by wire name (`repowalk walk pause|resume|cancel` maps its verb with it). */
export const controlSignals = { pause: pauseSignal, resume: resumeSignal, cancel: cancelSignal } as const;

export type ControlName = keyof typeof controlSignals;

export type ControlHandlers = { [K in ControlName]?: () => void | Promise<void> };

/** Sets the handlers of the control signals a workflow answers (in workflow code only). */
export function handleControl(handlers: ControlHandlers): void {
  for (const name of Object.keys(controlSignals) as ControlName[]) {
    const handler = handlers[name];
    if (handler) setHandler(controlSignals[name], handler);
  }
}
