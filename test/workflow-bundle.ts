/**
 * The workflow bundle tests run: the same `workflows/index.ts` the worker bundles, built once per
 * test process (bundling takes seconds on two cores).
 */
import { bundleWorkflowCode, DefaultLogger } from '@temporalio/worker';
import { WORKFLOWS_PATH } from '../workers/worker.ts';

let bundle: Promise<string> | undefined;

/** The bundle's code (for `workflowBundle: { code }`, or to write to a file for another process). */
export function workflowBundleCode(): Promise<string> {
  bundle ??= bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: new DefaultLogger('WARN') }).then((b) => b.code);
  return bundle;
}
