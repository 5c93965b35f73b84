/**
 * The workflow bundle tests run: the same `workflows/index.ts` the worker runs, from the same
 * cache (`workers/bundle.ts`: built once per content, in a child process), read once per test
 * process.
 */
import { readFile } from 'node:fs/promises';
import { loadConfig } from '../config/load.ts';
import { workflowBundle } from '../workers/bundle.ts';
import { WORKFLOWS_PATH } from '../workers/worker.ts';

let bundle: Promise<string> | undefined;

/** The bundle's code (for `workflowBundle: { code }`, or to write to a file for another process). */
export function workflowBundleCode(): Promise<string> {
  bundle ??= workflowBundle({ workflowsPath: WORKFLOWS_PATH, cacheDir: loadConfig().cacheDir }).then(({ codePath }) => readFile(codePath, 'utf8'));
  return bundle;
}
