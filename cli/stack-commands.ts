/**
 * `repowalk stack up | down | status | serve`. `up` builds the tools in the foreground (so the
 * first, slow build is visible), then starts `stack serve` as a detached supervisor that owns
 * every server process and writes `<stateDir>/stack.json` once all answer.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, open, readdir, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../config/options.ts';
import { ensureStackTools, removeStackInfo, startStack, writeStackInfo } from '../stack/stack.ts';
import { readStackInfo, type StackInfo } from '../config/stack-info.ts';
import { redactUrl } from '../storage/db/pool.ts';

const MAIN = fileURLToPath(new URL('./main.ts', import.meta.url));

/**
 * Starts `repowalk <args>` as a background process that outlives this one, its output appended
 * to `<stateDir>/logs/<logName>`.
 */
export async function startDetached(config: Config, args: string[], logName: string, env: Record<string, string> = {}): Promise<ChildProcess> {
  await mkdir(join(config.stateDir, 'logs'), { recursive: true });
  const log = await open(join(config.stateDir, 'logs', logName), 'a');
  const child = spawn(process.execPath, [...process.execArgv, MAIN, ...args], {
    detached: true,
    stdio: ['ignore', log.fd, log.fd],
    env: { ...process.env, ...env, REPOWALK_STATE_DIR: config.stateDir, REPOWALK_CACHE_DIR: config.cacheDir },
  });
  child.unref();
  await log.close();
  return child;
}

export function describeStack(info: StackInfo): string {
  const lines = [
    `stack (supervisor pid ${info.pid}, since ${info.startedAt}, state ${info.stateDir})`,
    `  temporal     ${info.temporal.address}  namespace ${info.temporal.namespace}${info.temporal.mode === 'server' ? '  (temporal server on PostgreSQL)' : ''}`,
    `  web ui       ${info.temporal.uiUrl ?? '(headless)'}`,
    `  postgres     ${redactUrl(info.postgres.url)}${info.postgres.embedded ? '  (embedded)' : '  (DATABASE_URL)'}`,
    `  s3           ${info.s3 ? `${info.s3.endpoint}  buckets ${info.s3.buckets.join(', ')}` : '(off)'}`,
    `  blobs (dir)  ${info.blobDir}`,
    ...(info.pds ? [`  pds          ${info.pds.url}  (plc ${info.pds.plcUrl})`] : []),
  ];
  return lines.join('\n');
}

function stackOptions(config: Config) {
  return {
    stateDir: config.stateDir,
    cacheDir: config.cacheDir,
    temporal: { port: config.temporal.port, uiPort: config.temporal.uiPort, ui: config.stack.ui, namespace: config.temporal.namespace, mode: config.stack.temporal },
    postgres: { url: config.database.url, port: config.database.port },
    s3: { enabled: config.stack.s3, port: config.s3.port, buckets: config.s3.buckets, region: config.s3.region },
    pds: { enabled: config.stack.pds },
  };
}

/** Runs in the foreground until SIGINT/SIGTERM; `stack up` starts it detached. */
export async function stackServe(config: Config): Promise<void> {
  const running = await startStack({ ...stackOptions(config), log: (l) => console.log(l) });
  await writeStackInfo(running.info);
  console.log(describeStack(running.info));
  console.log('ready');
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  console.log('stopping');
  await removeStackInfo(config.stateDir);
  await running.stop();
  console.log('stopped');
}

export async function stackUp(config: Config): Promise<StackInfo> {
  const existing = readStackInfo(config.stateDir);
  if (existing) return existing;
  await ensureStackTools(config.cacheDir, config.stack.s3, (l) => console.error(`repowalk: ${l}`), config.stack.temporal, config.stack.ui);
  const logFile = join(config.stateDir, 'logs', 'stack.log');
  const child = await startDetached(config, ['stack', 'serve'], 'stack.log', { REPOWALK_STACK_PDS: String(config.stack.pds) });
  let exited: number | null | undefined;
  child.once('exit', (code) => (exited = code));
  // A first start may install the local PDS (about 2 minutes) besides starting the servers.
  const deadline = Date.now() + 600_000;
  while (Date.now() < deadline) {
    const info = readStackInfo(config.stateDir);
    if (info) return info;
    if (exited !== undefined) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  const tail = (await readFile(logFile, 'utf8').catch(() => '')).split('\n').slice(-25).join('\n');
  throw new Error(`the stack did not come up (${exited !== undefined ? `supervisor exited with ${exited}` : 'timed out'}); ${logFile} ends with:\n${tail}`);
}

export async function stackDown(config: Config): Promise<boolean> {
  // The demo's workers: worker.pid, and worker-<n>.pid when it ran several (--workers N).
  const pidFiles = (await readdir(config.stateDir).catch(() => [] as string[])).filter((f) => /^worker(-\d+)?\.pid$/.test(f));
  for (const f of pidFiles) {
    const workerPid = join(config.stateDir, f);
    const pid = Number(await readFile(workerPid, 'utf8'));
    try {
      process.kill(pid, 'SIGTERM');
    } catch {}
    await rm(workerPid, { force: true });
  }
  const info = readStackInfo(config.stateDir);
  if (!info) return false;
  process.kill(info.pid, 'SIGTERM');
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    try {
      process.kill(info.pid, 0);
    } catch {
      return true;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  process.kill(info.pid, 'SIGKILL');
  await removeStackInfo(config.stateDir);
  return true;
}
