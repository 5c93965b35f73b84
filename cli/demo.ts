/**
 * `repowalk demo`: the stack, migrations, a worker in the background, and a first workflow.
 * Later capabilities (backfill of a local PDS, a walk) extend it.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../config/options.ts';
import { resolveEndpoints } from '../config/resolve.ts';
import { connectClient } from '../client/connection.ts';
import { stackUp, describeStack } from './stack-commands.ts';
import type { PingResult } from '../workflows/ping.ts';
import { taskQueueFor } from '../workers/jobs.ts';

const MAIN = fileURLToPath(new URL('./main.ts', import.meta.url));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Starts `repowalk worker` detached (once), logging to `<stateDir>/logs/worker.log`. */
export async function ensureBackgroundWorker(config: Config): Promise<number> {
  const pidFile = join(config.stateDir, 'worker.pid');
  if (existsSync(pidFile)) {
    const pid = Number(await readFile(pidFile, 'utf8'));
    if (alive(pid)) return pid;
  }
  await mkdir(join(config.stateDir, 'logs'), { recursive: true });
  const log = await open(join(config.stateDir, 'logs', 'worker.log'), 'a');
  const child = spawn(process.execPath, [...process.execArgv, MAIN, 'worker'], {
    detached: true,
    stdio: ['ignore', log.fd, log.fd],
    env: { ...process.env, REPOWALK_STATE_DIR: config.stateDir },
  });
  child.unref();
  await log.close();
  await writeFile(pidFile, String(child.pid));
  return child.pid!;
}

export async function runPing(config: Config, message: string): Promise<PingResult> {
  const endpoints = resolveEndpoints(config, { database: false });
  const client = await connectClient(endpoints);
  try {
    return await client.workflow.execute('ping', {
      taskQueue: taskQueueFor(config, 'maintenance'),
      workflowId: `ping/${Date.now()}`,
      args: [{ message }],
      workflowExecutionTimeout: '2 minutes',
    });
  } finally {
    await client.connection.close();
  }
}

export async function runDemo(config: Config): Promise<void> {
  const started = Date.now();
  const info = await stackUp(config);
  console.log(describeStack(info));
  const pid = await ensureBackgroundWorker(config);
  console.log(`worker        pid ${pid}, log ${join(config.stateDir, 'logs', 'worker.log')}`);
  const result = await runPing(config, 'hello from the repowalk demo');
  console.log(`ping workflow ${result.workflowId}: PostgreSQL ${result.postgresVersion}, blobstore ${result.blobstore}, worker ${result.worker}`);
  console.log(`\ndemo ready in ${((Date.now() - started) / 1000).toFixed(1)} s. Web UI: ${info.temporal.uiUrl ?? '(headless)'}`);
  console.log('stop everything with: ./repowalk stack down');
}
