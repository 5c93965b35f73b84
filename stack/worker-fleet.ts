/**
 * N `repowalk worker` processes on one machine, all polling the same task queues: what a
 * cluster's worker fleet is, small. The bench and the multi-worker tests start one; each process
 * is its own Temporal worker, its own pools, its own politeness client, so killing one (SIGKILL)
 * is what losing a host is.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const REPOWALK = fileURLToPath(new URL('../repowalk', import.meta.url));

export interface FleetWorker {
  index: number;
  child: ChildProcess;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface WorkerFleet {
  workers: FleetWorker[];
  /** Starts one more worker (e.g. to replace a killed one); resolves once it polls. */
  add(): Promise<FleetWorker>;
  /** SIGKILL: no drain, no goodbye; running activities are retried elsewhere after their heartbeat timeout. */
  kill(index: number): Promise<void>;
  /** SIGTERM to every live worker, SIGKILL to any still alive after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

export interface WorkerFleetOptions {
  count: number;
  /** Jobs each worker runs (`--job`); default all. */
  jobs?: string[];
  /** The workers' environment (TEMPORAL_ADDRESS, DATABASE_URL, REPOWALK_TASK_QUEUE, …), over this process's. */
  env: Record<string, string>;
  readyTimeoutMs?: number;
}

export async function startWorkerFleet(opts: WorkerFleetOptions): Promise<WorkerFleet> {
  const workers: FleetWorker[] = [];
  const args = ['worker', ...(opts.jobs ?? []).flatMap((j) => ['--job', j])];

  const start = async (): Promise<FleetWorker> => {
    const child = spawn(REPOWALK, args, { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout!.on('data', (d) => (output += d));
    child.stderr!.on('data', (d) => (output += d));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
    const worker: FleetWorker = { index: workers.length, child, output: () => output, exited };
    workers.push(worker);
    const timeoutMs = opts.readyTimeoutMs ?? 180_000;
    const deadline = Date.now() + timeoutMs;
    while (!output.includes('worker running jobs')) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`worker ${worker.index} exited before it was ready:\n${output.slice(-3000)}`);
      if (Date.now() > deadline) throw new Error(`worker ${worker.index} not ready after ${timeoutMs / 1000} s:\n${output.slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return worker;
  };

  const stop = async (graceMs = 20_000) => {
    await Promise.all(
      workers.map(async (w) => {
        if (w.child.exitCode !== null || w.child.signalCode !== null) return;
        w.child.kill('SIGTERM');
        const timer = setTimeout(() => w.child.kill('SIGKILL'), graceMs);
        await w.exited;
        clearTimeout(timer);
      }),
    );
  };

  try {
    // One at a time: each bundles the workflows at start, and two cores do that best in turn.
    for (let i = 0; i < opts.count; i++) await start();
  } catch (err) {
    await stop(1000);
    throw err;
  }
  return {
    workers,
    add: start,
    async kill(index) {
      const w = workers[index];
      if (!w || w.child.exitCode !== null || w.child.signalCode !== null) return;
      w.child.kill('SIGKILL');
      await w.exited;
    },
    stop,
  };
}
