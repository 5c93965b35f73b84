/**
 * `repowalk worker`: connects to Temporal and runs the selected jobs, each as its own Temporal
 * worker on the job's task queue, until SIGINT or SIGTERM.
 *
 * Shutdown is two-staged, and ours rather than the SDK runtime's (`shutdownSignals: []`): the
 * first signal stops polling and gives running activities `shutdownGraceTime` to finish; then
 * they are cancelled, stop at a safe point and fail this attempt ("Worker is shutting down"), so
 * the server retries them, after their retry interval, on another worker (from their last
 * heartbeat). When every job has drained the process exits 0. A second signal exits at once with
 * code 130, leaving running activities to their heartbeat timeouts.
 *
 * With `worker.metricsPort` > 0 it serves `/healthz` and `/metrics` (workers/health.ts).
 */
import { fileURLToPath } from 'node:url';
import { NativeConnection, Worker, Runtime, DefaultLogger, type LogLevel } from '@temporalio/worker';
import type { Duration } from '@temporalio/common';
import type { Config } from '../config/options.ts';
import type { Endpoints } from '../config/resolve.ts';
import { freePort } from '../config/free-port.ts';
import { openStores } from './stores.ts';
import { taskQueueFor } from '../config/task-queues.ts';
import type { JobDefinition } from './jobs.ts';
import type { HealthServer, WorkerStatus } from './health.ts';
import { workflowBundle } from './bundle.ts';
import { SharedWorkflows } from './shared-workflows.ts';

export const WORKFLOWS_PATH = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));

/** Exit code of a second shutdown signal: stopped at once, not drained. */
export const FORCED_EXIT_CODE = 130;

/** The runtime is process-wide and installed once, with the SDK's metrics exporter or without. */
let runtime: Promise<{ sdkMetricsUrl: string | undefined }> | undefined;

async function installRuntime(level: Config['logLevel'], sdkMetrics: boolean): Promise<{ sdkMetricsUrl: string | undefined }> {
  runtime ??= (async () => {
    // The SDK exporter listens on loopback only; /metrics relays its text.
    const bindAddress = sdkMetrics ? `127.0.0.1:${await freePort()}` : undefined;
    Runtime.install({
      logger: new DefaultLogger(level.toUpperCase() as LogLevel),
      shutdownSignals: [],
      ...(bindAddress ? { telemetryOptions: { metrics: { prometheus: { bindAddress } } } } : {}),
    });
    return { sdkMetricsUrl: bindAddress ? `http://${bindAddress}/metrics` : undefined };
  })();
  const installed = await runtime;
  if (sdkMetrics && !installed.sdkMetricsUrl) Runtime.instance().logger.warn('Temporal SDK metrics are off: the runtime of this process was installed without them');
  return installed;
}

export interface RunWorkerOptions {
  config: Config;
  endpoints: Endpoints;
  jobs: JobDefinition[];
  /** Stops the worker gracefully when aborted. */
  signal?: AbortSignal;
  onReady?: (info: { taskQueues: string[]; healthUrl: string | undefined }) => void;
  /** Handle SIGINT and SIGTERM as described above (default true; in-process tests may turn it off). */
  handleSignals?: boolean;
  /** Interface of the health and metrics endpoint (default 127.0.0.1). */
  metricsHost?: string;
  /** How long running activities may go on after shutdown begins before they are cancelled. */
  shutdownGraceTime?: Duration;
}

export async function runWorker(opts: RunWorkerOptions): Promise<void> {
  const { config, endpoints } = opts;
  const metricsOn = config.worker.metricsPort > 0;
  const { sdkMetricsUrl } = await installRuntime(config.logLevel, metricsOn);
  const log = Runtime.instance().logger;

  let status: WorkerStatus = 'starting';
  let workers: Array<{ job: string; worker: Worker }> = [];
  const stop = (why: string) => {
    if (status === 'stopping') return;
    const wasRunning = status === 'running';
    status = 'stopping';
    log.info(`worker stopping (${why})`);
    // Workers not yet running are never started (see below).
    if (wasRunning) for (const { worker } of workers) if (worker.getState() === 'RUNNING') worker.shutdown();
  };

  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals += 1;
    if (signals === 1) {
      log.info(`${sig}: shutting down; running activities have ${String(opts.shutdownGraceTime ?? '10 seconds')} to finish before they are cancelled; send ${sig} again to exit at once`);
      stop(sig);
    } else {
      log.warn(`${sig} again: exiting at once (${FORCED_EXIT_CODE})`);
      process.exit(FORCED_EXIT_CODE);
    }
  };
  const handleSignals = opts.handleSignals ?? true;
  if (handleSignals) for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, onSignal);
  const onAbort = () => stop('stop requested');
  if (opts.signal?.aborted) onAbort();
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  try {
    await runJobs();
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    if (handleSignals) for (const sig of ['SIGINT', 'SIGTERM'] as const) process.off(sig, onSignal);
  }

  async function runJobs(): Promise<void> {
    const stores = await openStores(config, endpoints);
    let health: HealthServer | undefined;
    try {
      if (metricsOn) {
        // Imported only when on: an ES import of node:http loads Node's fetch (undici) with it.
        const [{ startHealthServer }, { workerMetrics }] = await Promise.all([import('./health.ts'), import('./metrics.ts')]);
        health = await startHealthServer({
          port: config.worker.metricsPort,
          host: opts.metricsHost ?? '127.0.0.1',
          metrics: workerMetrics({ pool: stores.pool, sdkMetricsUrl }),
          report: () => ({ status, pid: process.pid, jobs: workers.map(({ job, worker }) => ({ job, taskQueue: worker.options.taskQueue, state: worker.getState() })) }),
        });
        log.info(`health and metrics on ${health.url}/healthz and ${health.url}/metrics`);
      }
      const connection = await NativeConnection.connect({ address: endpoints.temporalAddress });
      try {
        // One bundle for every job's worker, built once per content in a child process and cached
        // (workers/bundle.ts): bundling in this process would keep its heap for the process's life.
        const bundle = await workflowBundle({ workflowsPath: WORKFLOWS_PATH, cacheDir: config.cacheDir, log: (l) => log.info(l) });
        const activitiesOf = new Map(opts.jobs.map((job) => [job.name, job.activities({ config, stores })]));
        const shared = new SharedWorkflows([...activitiesOf.values()].flatMap((a) => Object.keys(a)));
        workers = await Promise.all(
          opts.jobs.map(async (job) => ({
            job: job.name,
            worker: await shared.create({
              connection,
              namespace: endpoints.namespace,
              taskQueue: taskQueueFor(config, job.name),
              workflowBundle: bundle,
              activities: activitiesOf.get(job.name)!,
              // 2 cores: a handful of concurrent activities keeps Postgres and the blobstore busy without thrashing.
              maxConcurrentActivityTaskExecutions: 16,
              shutdownGraceTime: opts.shutdownGraceTime ?? '10 seconds',
            }),
          })),
        );
        // A signal may have come while the workflows were bundled (the closures above change
        // `status`): then the workers start only to drain at once, which also releases them.
        const stoppedEarly = (status as WorkerStatus) === 'stopping';
        if (!stoppedEarly) status = 'running';
        // One job's worker failing stops the others: the process exits and its supervisor restarts it.
        const runs = workers.map(({ job, worker }) =>
          worker.run().catch((err: unknown) => {
            stop(`job ${job} failed: ${(err as Error)?.message ?? String(err)}`);
            throw err;
          }),
        );
        if (stoppedEarly) for (const { worker } of workers) worker.shutdown();
        // Services (serve) run beside the Temporal workers and stop once those have drained.
        const services = stoppedEarly ? [] : await Promise.all(opts.jobs.filter((j) => j.service).map((j) => j.service!({ config, stores })));
        for (const s of services) log.info(`service on ${s.url}`);
        if (!stoppedEarly) opts.onReady?.({ taskQueues: workers.map(({ worker }) => worker.options.taskQueue), healthUrl: health?.url });
        const settled = await Promise.allSettled(runs);
        await Promise.allSettled(services.map((s) => s.close()));
        const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
        if (failed) throw failed.reason;
        log.info('worker stopped: every job drained');
      } finally {
        await connection.close();
      }
    } finally {
      await health?.close();
      await stores.close();
    }
  }
}
