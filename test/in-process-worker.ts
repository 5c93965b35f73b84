/**
 * An in-process repowalk worker for e2e tests, on the test stack's Temporal: the environment
 * every such test gives it, and a start that resolves once the worker polls (or rejects if it
 * stops before that).
 */
import { loadConfig } from '../config/load.ts';
import { resolveEndpoints } from '../config/resolve.ts';
import type { Config } from '../config/options.ts';
import { runWorker } from '../workers/worker.ts';
import { selectJobs } from '../workers/jobs.ts';
import { testStack } from './stack.ts';

export interface InProcessWorker {
  config: Config;
  stop: AbortController;
  done: Promise<void>;
}

/** The worker's environment: the test stack's Temporal, these stores, the local PDS's PLC. */
export function inProcessWorkerEnv(
  opts: { stateDir: string; databaseUrl: string; blobDir: string; taskQueue: string; plcUrl: string },
  extra: Record<string, string | undefined> = {},
): Record<string, string | undefined> {
  const stack = testStack();
  return {
    REPOWALK_CACHE_DIR: process.env.REPOWALK_CACHE_DIR,
    REPOWALK_STATE_DIR: opts.stateDir,
    // 'error': the failures these tests provoke on purpose would fill the output at 'warn'.
    REPOWALK_LOG_LEVEL: 'error',
    TEMPORAL_ADDRESS: stack.temporal.address,
    TEMPORAL_NAMESPACE: stack.temporal.namespace,
    DATABASE_URL: opts.databaseUrl,
    REPOWALK_BLOB_DIR: opts.blobDir,
    REPOWALK_TASK_QUEUE: opts.taskQueue,
    REPOWALK_PLC_URL: opts.plcUrl,
    REPOWALK_ALLOW_PRIVATE_ADDRESSES: 'true',
    ...extra,
  };
}

/** Runs `jobs` in this process; resolves once the worker polls. */
export async function startInProcessWorker(env: Record<string, string | undefined>, jobs: string[]): Promise<InProcessWorker> {
  const config = loadConfig({ env });
  const stop = new AbortController();
  let ready!: () => void;
  const isReady = new Promise<void>((r) => (ready = r));
  const done = runWorker({ config, endpoints: resolveEndpoints(config), jobs: selectJobs(jobs, [], []), signal: stop.signal, onReady: () => ready() });
  await Promise.race([isReady, done.then(() => Promise.reject(new Error('worker stopped before it was ready')))]);
  return { config, stop, done };
}
