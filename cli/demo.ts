/**
 * `repowalk demo`, the main job on local data: the stack with a local reference PDS, sample
 * accounts on it (posts, likes, follows, profiles, images, and one account of 5,000 records),
 * a worker in the background, and a backfill of every repo the PDS lists; then a summary.
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config/options.ts';
import { resolveEndpoints } from '../config/resolve.ts';
import { connectClient } from '../client/connection.ts';
import { connectPool } from '../storage/db/pool.ts';
import { stackUp, describeStack, startDetached } from './stack-commands.ts';
import { startBackfill, formatProgress } from './backfill-commands.ts';
import { ping, type PingResult } from '../workflows/ping.ts';
import type { BackfillProgress } from '../workflows/backfill.ts';
import type { StackInfo } from '../config/stack-info.ts';
import { JOB_NAMES, taskQueueFor } from '../config/task-queues.ts';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Environment a worker needs to backfill from the stack's local PDS. */
export function localPdsEnv(info: StackInfo): Record<string, string> {
  // The local PDS's handles (*.test) resolve nowhere: taken as the PDS claims them, not checked.
  return info.pds ? { REPOWALK_PLC_URL: info.pds.plcUrl, REPOWALK_ALLOW_PRIVATE_ADDRESSES: 'true', REPOWALK_VERIFY_HANDLES: 'false' } : {};
}

/**
 * Starts `repowalk worker` detached (once), logging to `<stateDir>/logs/worker.log`; worker `n`
 * past the first keeps `worker-<n>.pid` and `worker-<n>.log`.
 */
export async function ensureBackgroundWorker(config: Config, env: Record<string, string> = {}, n = 1): Promise<number> {
  const name = n === 1 ? 'worker' : `worker-${n}`;
  const pidFile = join(config.stateDir, `${name}.pid`);
  if (existsSync(pidFile)) {
    const pid = Number(await readFile(pidFile, 'utf8'));
    if (alive(pid)) return pid;
  }
  // The first worker runs every job by name, so that opt-in ones (serve, which listens on a
  // port) run too, once; the others share the default jobs' task queues.
  const jobs = n === 1 ? JOB_NAMES.flatMap((job) => ['--job', job]) : [];
  const child = await startDetached(config, ['worker', ...jobs], `${name}.log`, env);
  await writeFile(pidFile, String(child.pid));
  return child.pid!;
}

/** Whether the worker's serve job answers (it starts a moment after the worker polls). */
async function serving(url: string): Promise<boolean> {
  for (let i = 0; i < 50; i++) {
    try {
      if ((await fetch(`${url}/_health`, { signal: AbortSignal.timeout(1000) })).ok) return true;
    } catch {}
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}

export async function runPing(config: Config, message: string): Promise<PingResult> {
  const endpoints = resolveEndpoints(config, { database: false });
  const client = await connectClient(endpoints);
  try {
    return await client.workflow.execute(ping, {
      taskQueue: taskQueueFor(config, 'maintenance'),
      workflowId: `ping/${Date.now()}`,
      args: [{ message }],
      workflowExecutionTimeout: '2 minutes',
    });
  } finally {
    await client.connection.close();
  }
}

/** Creates the sample accounts once; a PDS that lists repos already has them. */
async function seedOnce(info: StackInfo): Promise<string> {
  // The demo's sample accounts are the tests' (one set of fixtures to keep realistic).
  const { listReposPage } = await import('../test/xrpc.ts');
  const { seedSampleAccounts } = await import('../test/pds-seed.ts');
  const existing = await listReposPage(info.pds!.url, { limit: 1 });
  if (existing.repos.length > 0) return 'sample accounts already on the PDS';
  const seeded = await seedSampleAccounts(info.pds!.url, { bigAccountRecords: 5000 });
  const records = Object.values(seeded.recordCounts).reduce((a, b) => a + b, 0);
  return `seeded ${Object.keys(seeded.recordCounts).length} accounts with ${records} records and ${seeded.blobs.length} images`;
}

export async function runDemo(baseConfig: Config, opts: { workers?: number } = {}): Promise<void> {
  const workers = opts.workers ?? 1;
  const started = Date.now();
  const config: Config = { ...baseConfig, stack: { ...baseConfig.stack, pds: true } };
  const info = await stackUp(config);
  if (!info.pds) {
    throw new Error(`the stack running in ${config.stateDir} has no local PDS; stop it with ./repowalk stack down and run the demo again`);
  }
  console.log(describeStack(info));
  console.log(`sample data   ${await seedOnce(info)}`);
  // Several workers share every job's task queues (and, through PostgreSQL, the PDS's politeness).
  const pids: number[] = [];
  for (let n = 1; n <= workers; n++) pids.push(await ensureBackgroundWorker(config, localPdsEnv(info), n));
  console.log(`worker        ${workers === 1 ? `pid ${pids[0]}` : `${workers} processes, pids ${pids.join(' ')}`}, all jobs, log ${join(config.stateDir, 'logs', 'worker.log')}`);
  const ping = await runPing(config, 'hello from the repowalk demo');
  console.log(`ping          ${ping.workflowId}: PostgreSQL ${ping.postgresVersion}, blobstore ${ping.blobstore}`);

  const endpoints = resolveEndpoints(config);
  const client = await connectClient(endpoints);
  let progress: BackfillProgress;
  try {
    // A page more than workers, so that each worker's lanes go on to the next page as its current one ends.
    const handle = await startBackfill(client, config, { source: { kind: 'pds', url: info.pds.url }, settings: { blobs: true }, pagesInFlight: workers + 1 });
    console.log(`backfill      ${handle.workflowId} from ${info.pds.url} …`);
    progress = await handle.result();
  } finally {
    await client.connection.close();
  }
  console.log(`              ${formatProgress(progress)}`);

  const pool = await connectPool(endpoints.databaseUrl);
  try {
    const { rows } = await pool.query<{ repos: string; records: string; blocks: string; packs: string; bytes: string; blobs: string; errors: string }>(`
      SELECT (SELECT count(*) FROM repos) AS repos,
             (SELECT count(*) FROM records) AS records,
             (SELECT count(*) FROM blocks) AS blocks,
             (SELECT count(*) FROM packs) AS packs,
             (SELECT coalesce(sum(size_bytes), 0) FROM packs) AS bytes,
             (SELECT count(*) FROM blobs WHERE status = 'present') AS blobs,
             (SELECT count(*) FROM repos WHERE status = 'error' OR resync_kind IS NOT NULL) AS errors`);
    const m = rows[0]!;
    console.log(`\nmirror        ${m.repos} repos, ${m.records} records, ${m.blocks} blocks in ${m.packs} ${Number(m.packs) === 1 ? 'pack' : 'packs'} (${(Number(m.bytes) / 1e6).toFixed(1)} MB), ${m.blobs} blobs, ${m.errors} errors`);
  } finally {
    await pool.end();
  }
  const serveUrl = `http://${config.serve.host.includes(':') ? `[${config.serve.host}]` : config.serve.host}:${config.serve.port}`;
  console.log(`serve         ${(await serving(serveUrl)) ? serveUrl : `${serveUrl} not answering (see the worker log)`}: XRPC at /xrpc/…, tap event stream at ${serveUrl.replace(/^http/, 'ws')}/channel`);
  console.log(`              e.g. curl '${serveUrl}/xrpc/com.atproto.sync.listRepos'`);
  console.log(`\ndemo done in ${((Date.now() - started) / 1000).toFixed(1)} s. Web UI: ${info.temporal.uiUrl ?? '(headless)'}`);
  console.log(`workers of your own need: ${Object.entries(localPdsEnv(info)).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  console.log('stop everything with: ./repowalk stack down');
}
