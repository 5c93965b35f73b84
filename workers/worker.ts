/**
 * `repowalk worker`: connects to Temporal and runs repowalk's workflows and activities on the
 * configured task queue until SIGINT or SIGTERM, then drains and exits.
 */
import { fileURLToPath } from 'node:url';
import { NativeConnection, Worker, Runtime, DefaultLogger, type LogLevel } from '@temporalio/worker';
import type { Config } from '../config/options.ts';
import type { Endpoints } from '../config/resolve.ts';
import { createActivities } from '../activities/index.ts';
import { openStores } from './stores.ts';

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
  taskQueue?: string;
  /** Resolves when the worker should stop (default: SIGINT/SIGTERM). */
  signal?: AbortSignal;
  onReady?: (info: { taskQueue: string }) => void;
}

export async function runWorker(opts: RunWorkerOptions): Promise<void> {
  const { config, endpoints } = opts;
  installRuntime(config.logLevel);
  const stores = await openStores(config, endpoints);
  const connection = await NativeConnection.connect({ address: endpoints.temporalAddress });
  const taskQueue = opts.taskQueue ?? config.temporal.taskQueue;
  try {
    const worker = await Worker.create({
      connection,
      namespace: endpoints.namespace,
      taskQueue,
      workflowsPath: WORKFLOWS_PATH,
      activities: createActivities(stores),
      // 2 cores: a handful of concurrent activities keeps Postgres and the blobstore busy without thrashing.
      maxConcurrentActivityTaskExecutions: 16,
      shutdownGraceTime: '10 seconds',
    });
    opts.signal?.addEventListener('abort', () => worker.shutdown(), { once: true });
    const run = worker.run();
    opts.onReady?.({ taskQueue });
    await run;
  } finally {
    await connection.close();
    await stores.close();
  }
}
