/**
 * `repowalk worker`: connects to Temporal and runs the selected jobs, each as its own Temporal
 * worker on the job's task queue, until SIGINT or SIGTERM; then lets running activities reach a
 * safe point and exits.
 */
import { fileURLToPath } from 'node:url';
import { NativeConnection, Worker, Runtime, DefaultLogger, bundleWorkflowCode, type LogLevel } from '@temporalio/worker';
import type { Config } from '../config/options.ts';
import type { Endpoints } from '../config/resolve.ts';
import { openStores } from './stores.ts';
import { taskQueueFor, type JobDefinition, type JobName } from './jobs.ts';

export const WORKFLOWS_PATH = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));

let runtimeInstalled = false;

function installRuntime(level: Config['logLevel']): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  Runtime.install({ logger: new DefaultLogger(level.toUpperCase() as LogLevel) });
}

export interface RunWorkerOptions {
  config: Config;
  endpoints: Endpoints;
  jobs: JobDefinition[];
  /** Stops the worker when aborted (SIGINT/SIGTERM always do). */
  signal?: AbortSignal;
  onReady?: (info: { taskQueues: string[] }) => void;
}

export async function runWorker(opts: RunWorkerOptions): Promise<void> {
  const { config, endpoints } = opts;
  installRuntime(config.logLevel);
  const stores = await openStores(config, endpoints);
  const connection = await NativeConnection.connect({ address: endpoints.temporalAddress });
  try {
    // One bundle for every job's worker: bundling costs seconds and the code is the same.
    const workflowBundle = await bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: Runtime.instance().logger });
    const workers = await Promise.all(
      opts.jobs.map((job) =>
        Worker.create({
          connection,
          namespace: endpoints.namespace,
          taskQueue: taskQueueFor(config, job.name as JobName),
          workflowBundle,
          activities: job.activities({ config, stores }),
          // 2 cores: a handful of concurrent activities keeps Postgres and the blobstore busy without thrashing.
          maxConcurrentActivityTaskExecutions: 16,
          shutdownGraceTime: '10 seconds',
        }),
      ),
    );
    opts.signal?.addEventListener('abort', () => workers.forEach((w) => w.shutdown()), { once: true });
    const running = Promise.all(workers.map((w) => w.run()));
    opts.onReady?.({ taskQueues: workers.map((w) => w.options.taskQueue) });
    await running;
  } finally {
    await connection.close();
    await stores.close();
  }
}
