/**
 * Walks end to end on the real stack: the `walk` and `walkSlice` workflows on the dev server, a
 * worker in its own process (so that it can be killed with SIGKILL), PostgreSQL and a blob
 * directory holding a mirror stored by the importer.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { freshDatabase, testStack } from '../test/stack.ts';
import { openPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { listFindings } from '../graph/findings.ts';
import { runWalk } from '../graph/run.ts';
import { buildMirror, testDids } from '../test/mirror.ts';
import { workflowBundleCode } from '../test/workflow-bundle.ts';
import { type WalkTotals, sumTotals } from '../graph/totals.ts';
import { WalkInput, toWalkSpec, type WalkInputJson } from '../graph/walk-input.ts';
import { walk, walkProgressQuery, cancelSignal, pauseSignal, resumeSignal, type WalkProgress, type WalkWorkflowInput } from './walk.ts';
import { loadConfig } from '../config/load.ts';
import { liveProgress, walkCommand, walkInputFromArgs } from '../cli/walk-commands.ts';
import { UsageError } from '../cli/usage.ts';
import { walkSliceProgressQuery, type WalkSliceProgress } from './walk-slice.ts';

const ROOT = join(import.meta.dirname, '..');
// The walk job's queue for the prefix `walk-test-<pid>`, as the CLI computes it.
const prefix = `walk-test-${process.pid}`;
const taskQueue = `${prefix}-walk`;
const dids = testDids('walkwf', 6);
let pool: pg.Pool;
let dir: string;
let databaseUrl: string;
let bundlePath: string;
let client: Client;
let worker: ChildProcess | undefined;
let workerLog = '';

async function startWorker(rootDelayMs: number): Promise<void> {
  await stopWorker();
  workerLog = '';
  const w = spawn(process.execPath, [join(ROOT, 'test', 'walk-test-worker.ts')], {
    env: {
      ...process.env,
      TEMPORAL_ADDRESS: testStack().temporal.address,
      DATABASE_URL: databaseUrl,
      REPOWALK_BLOB_DIR: join(dir, 'blobs'),
      WALK_TASK_QUEUE: taskQueue,
      WALK_BUNDLE: bundlePath,
      WALK_ROOT_DELAY_MS: String(rootDelayMs),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  w.stdout!.on('data', (d) => (workerLog += d));
  w.stderr!.on('data', (d) => (workerLog += d));
  worker = w;
  await waitFor(() => workerLog.includes('walk test worker ready') || w.exitCode !== null, 60_000, 'worker start');
  if (w.exitCode !== null) throw new Error(`walk test worker exited ${w.exitCode}:\n${workerLog}`);
}

async function stopWorker(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const w = worker;
  worker = undefined;
  if (!w || w.exitCode !== null) return;
  const exited = new Promise((r) => w.once('exit', r));
  w.kill(signal);
  await exited;
}

async function waitFor(cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${workerLog}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const sliceProgress = (id: string) => client.workflow.getHandle(id).query(walkSliceProgressQuery);

/** Totals of walking every repo in one process, for comparison. */
async function directTotals(input: WalkInputJson): Promise<WalkTotals> {
  const store = new LocalBlobStore(join(dir, 'blobs'));
  const parts: WalkTotals[] = [];
  for (const did of dids) parts.push((await runWalk({ pool, store }, toWalkSpec(WalkInput.parse(input)), [{ type: 'Repo', did }])).totals);
  return sumTotals(parts);
}

beforeAll(async () => {
  databaseUrl = await freshDatabase('walk_wf');
  pool = openPool(databaseUrl);
  await migrate(pool);
  dir = await mkdtemp(join(tmpdir(), 'repowalk-walkwf-'));
  await buildMirror({ pool, blobs: new LocalBlobStore(join(dir, 'blobs')) }, dids.map((did, i) => ({ did, records: 80 + 10 * i })));
  // The worker process this test kills loads the bundle from a file.
  bundlePath = join(dir, 'bundle.js');
  await writeFile(bundlePath, await workflowBundleCode());
  client = new Client({ connection: await Connection.connect({ address: testStack().temporal.address }) });
}, 180_000);

afterAll(async () => {
  await stopWorker('SIGKILL');
  await client?.connection.close();
  await pool?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('walk workflow', () => {
  it('walks every repo in slices, with totals equal to a direct walk, findings stored under the walk id', async () => {
    await startWorker(0);
    const { rows } = await pool.query<{ cid: Buffer }>('SELECT cid FROM records WHERE did = $1 ORDER BY rkey DESC LIMIT 1', [dids[5]]);
    await pool.query('UPDATE blocks SET refcount = refcount + 1 WHERE cid = $1', [rows[0]!.cid]);
    try {
      const input: WalkInputJson = { type: 'validate', slices: 3, pageSize: 1, heartbeatSeconds: 5 };
      const workflowId = `walk-e2e-${Date.now()}`;
      const result = await client.workflow.execute(walk, { taskQueue, workflowId, args: [input] });
      const progress = result as WalkProgress;
      expect(progress.state).toBe('done');
      expect(progress.slices).toEqual({ total: 3, done: 3, running: [] });
      expect(progress.repos).toBe(6);
      expect(progress.totals).toEqual(await directTotals(input));
      expect(progress.totals.findings).toEqual({ 'refcount:error': 1 });
      const stored = await listFindings(pool, workflowId);
      expect(stored.map((f) => f.check)).toEqual(['refcount']);

      let listed: string[] = [];
      await waitFor(async () => {
        listed = [];
        for await (const wf of client.workflow.list({ query: `RepowalkKind = 'walk' AND WalkType = 'validate' AND RepowalkState = 'done' AND WorkflowId = '${workflowId}'` })) listed.push(wf.workflowId);
        return listed.length === 1;
      }, 15_000, 'search attributes');
    } finally {
      await pool.query('UPDATE blocks SET refcount = refcount - 1 WHERE cid = $1', [rows[0]!.cid]);
    }
  });

  it('fails bad input at once, naming the field', async () => {
    const err = await client.workflow
      .execute(walk, { taskQueue, workflowId: `walk-bad-${Date.now()}`, args: [{ type: 'validate', sampleRate: 4, sampleOffset: 4, repair: true } as WalkWorkflowInput] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const cause = (err as WorkflowFailedError).cause as Error & { type?: string };
    expect(cause.type).toBe('InvalidInput');
    expect(cause.message).toMatch(/sampleOffset: must be below sampleRate \(4\)/);
    expect(cause.message).toMatch(/repair: only the scrub walk repairs/);
  });

  it('a worker killed with SIGKILL mid-slice, then restarted: the walk resumes from its heartbeat, with the same totals', async () => {
    await startWorker(600);
    const input: WalkInputJson = { type: 'validate', slices: 1, pageSize: 6, rootConcurrency: 1, heartbeatSeconds: 2 };
    const workflowId = `walk-kill-${Date.now()}`;
    const handle = await client.workflow.start(walk, { taskQueue, workflowId, args: [input] });
    const slice = client.workflow.getHandle(`${workflowId}/slice-0`);
    let done = 0;
    await waitFor(async () => {
      const desc = await slice.describe().catch(() => undefined);
      const details = desc?.raw.pendingActivities?.[0]?.heartbeatDetails?.payloads?.[0];
      done = details ? (defaultPayloadConverter.fromPayload(details) as { done: number[] }).done.length : 0;
      return done >= 2;
    }, 60_000, 'two repos heartbeated');
    expect(done).toBeLessThan(6);
    await stopWorker('SIGKILL');
    await startWorker(0);
    const result = await handle.result();
    expect(result.state).toBe('done');
    expect(result.totals).toEqual(await directTotals(input));
    const s = (await slice.result()) as WalkSliceProgress;
    // The retried page skipped what the killed attempt had heartbeated as done.
    expect(s.resumedRoots).toBeGreaterThanOrEqual(2);
    expect(s.pages).toBe(1);
  });

  it('pause holds new pages; resume continues to the same totals', async () => {
    // Each root takes a second: a slice's three pages outlast the round trip of the pause even on
    // a loaded machine, and the wait below outlasts a page that was running when it came.
    await startWorker(1000);
    const input: WalkInputJson = { type: 'scrub', graceSeconds: 0, slices: 2, pageSize: 1, rootConcurrency: 1, heartbeatSeconds: 5 };
    const workflowId = `walk-pause-${Date.now()}`;
    const handle = await client.workflow.start(walk, { taskQueue, workflowId, args: [input] });
    const ids = [0, 1].map((i) => `${workflowId}/slice-${i}`);
    await waitFor(async () => (await Promise.all(ids.map((id) => sliceProgress(id).catch(() => undefined)))).some((p) => (p?.pages ?? 0) >= 1), 30_000, 'a first page');
    await handle.signal(pauseSignal);
    await waitFor(async () => (await handle.query(walkProgressQuery)).state === 'paused', 10_000, 'paused');
    // The pages running when the pause came may finish; none starts after them.
    await new Promise((r) => setTimeout(r, 2500));
    const held = await Promise.all(ids.map((id) => sliceProgress(id)));
    expect(held.every((p) => p.state === 'paused')).toBe(true);
    await new Promise((r) => setTimeout(r, 2000));
    const still = await Promise.all(ids.map((id) => sliceProgress(id)));
    expect(still.map((p) => p.pages)).toEqual(held.map((p) => p.pages));
    expect(still.reduce((n, p) => n + p.repos, 0)).toBeLessThan(6);
    await handle.signal(resumeSignal);
    const result = await handle.result();
    expect(result.state).toBe('done');
    expect(result.repos).toBe(6);
    expect(result.totals).toEqual(await directTotals(input));
  });

  it('with a tail interval, walks again: only the repos whose row changed since the last pass', async () => {
    await startWorker(0);
    await pool.query(`UPDATE repos SET updated_at = now() - interval '1 hour'`);
    const workflowId = `walk-tail-${Date.now()}`;
    const handle = await client.workflow.start(walk, { taskQueue, workflowId, args: [{ type: 'validate', slices: 2, tailIntervalSeconds: 2, heartbeatSeconds: 5 }] });
    let p: WalkProgress | undefined;
    await waitFor(async () => (p = await handle.query(walkProgressQuery)).state === 'tailing', 30_000, 'the first pass');
    expect(p).toMatchObject({ pass: 0, repos: 6, findingsId: workflowId });
    await pool.query('UPDATE repos SET updated_at = now() WHERE did = $1', [dids[2]]);
    await waitFor(async () => {
      p = await handle.query(walkProgressQuery);
      return p.pass === 1 && p.state === 'tailing';
    }, 30_000, 'the second pass');
    expect(p).toMatchObject({ pass: 1, repos: 1, findingsId: `${workflowId}#1` });
    expect(p!.allPasses.roots).toBe(7);
    await handle.signal(cancelSignal);
    expect(((await handle.result())).state).toBe('cancelled');
  });

  it('cancel stops every slice', async () => {
    await startWorker(1500);
    const input: WalkInputJson = { type: 'validate', slices: 3, sliceParallelism: 3, pageSize: 1, rootConcurrency: 1, heartbeatSeconds: 2 };
    const workflowId = `walk-cancel-${Date.now()}`;
    const handle = await client.workflow.start(walk, { taskQueue, workflowId, args: [input] });
    const ids = [0, 1, 2].map((i) => `${workflowId}/slice-${i}`);
    await waitFor(async () => (await Promise.all(ids.map((id) => sliceProgress(id).catch(() => undefined)))).every((p) => p !== undefined), 30_000, 'slices running');
    await handle.signal(cancelSignal);
    const result = await handle.result();
    expect(result.state).toBe('cancelled');
    expect(result.repos).toBeLessThan(6);
    for (const id of ids) {
      const desc = await client.workflow.getHandle(id).describe();
      expect(desc.status.name).toBe('COMPLETED');
      expect(((await client.workflow.getHandle(id).result()) as WalkSliceProgress).state).toBe('cancelled');
    }
    const desc = await handle.describe();
    expect(desc.searchAttributes.RepowalkState).toEqual(['cancelled']);
  });
});

describe('repowalk walk (CLI)', () => {
  const config = () => loadConfig({ env: { TEMPORAL_ADDRESS: testStack().temporal.address, DATABASE_URL: databaseUrl, REPOWALK_TASK_QUEUE: prefix, REPOWALK_CACHE_DIR: process.env.REPOWALK_CACHE_DIR } });
  async function cli(args: string[]): Promise<{ code: number; out: string }> {
    const lines: string[] = [];
    const log = console.log;
    console.log = (...a: unknown[]) => void lines.push(a.join(' '));
    try {
      const code = await walkCommand(config(), args);
      return { code, out: lines.join('\n') };
    } finally {
      console.log = log;
    }
  }

  it('turns flags into the workflow input, and refuses bad ones before starting anything', () => {
    expect(walkInputFromArgs(['scrub', '--slices', '4', '--repair', '--verify-bytes', '--include-node', 'deep,Block', '--sample-rate', '8', '--sample-offset', '3', '--walk-root', 'Pack:packs/ab/' + 'ab'.repeat(32) + '.car']).input).toEqual({
      type: 'scrub',
      roots: ['Pack:packs/ab/' + 'ab'.repeat(32) + '.car'],
      includeNodes: ['deep', 'Block'],
      slices: 4,
      repair: true,
      verifyBytes: true,
      sampleRate: 8,
      sampleOffset: 3,
    });
    expect(() => walkInputFromArgs(['validate', '--check', 'nope'])).toThrow(UsageError);
    expect(() => walkInputFromArgs(['validate', '--repair'])).toThrow(/only the scrub walk repairs/);
    expect(() => walkInputFromArgs(['corpus'])).toThrow(/outputDir: the corpus walk needs an output directory/);
    expect(() => walkInputFromArgs(['validate', '--root', 'Record:xyz'])).toThrow(/not a CIDv1/);
    expect(() => walkInputFromArgs(['dance'])).toThrow(/walk start takes a walk type/);
    expect(() => walkInputFromArgs(['validate', '--include-node', 'Nope'])).toThrow(/expected a node type or group/);
  });

  it('starts a walk, shows its status, lists it, and signals it', async () => {
    await startWorker(0);
    const id = `walk-cli-${Date.now()}`;
    const started = await cli(['start', 'validate', '--slices', '2', '--id', id, '--wait', '--check', 'block-hash,mst']);
    expect(started.code).toBe(0);
    expect(started.out).toContain(`started ${id}`);
    expect(started.out).toMatch(/\[#+\] 100% done pass 0 slices 2\/2/);
    const status = await cli(['status', id, '--once']);
    expect(status.out).toMatch(new RegExp(`${id} validate done: [\\d.]+s [\\d,]+ nodes .* 6 roots 0 findings \\| Repo 6/6/`));
    expect(status.out).toContain('findings: none');
    await waitFor(async () => (await cli(['list'])).out.includes(id), 15_000, 'walk list');
    const second = `walk-cli-${Date.now()}-2`;
    await startWorker(500);
    await cli(['start', 'validate', '--slices', '2', '--page-size', '1', '--root-concurrency', '1', '--id', second]);
    expect((await cli(['pause', second])).out).toBe(`signalled pause to ${second}`);
    await waitFor(async () => (await cli(['status', second, '--once'])).out.includes(' paused '), 10_000, 'paused');
    // Paused means stopped: once a page already under way has finished, the nodes walked so far
    // (running slices included) stay put; after resume they move again.
    const nodesOf = async () => (await liveProgress(client, second)).totals.nodes;
    let heldAt = -1;
    await waitFor(async () => {
      const a = await nodesOf();
      await new Promise((r) => setTimeout(r, 1500));
      const b = await nodesOf();
      heldAt = b;
      return a === b;
    }, 30_000, 'the paused walk to hold still');
    expect((await cli(['resume', second])).out).toBe(`signalled resume to ${second}`);
    await waitFor(async () => !(await cli(['status', second, '--once'])).out.includes(' paused '), 10_000, 'resumed');
    await waitFor(async () => (await nodesOf()) > heldAt, 30_000, 'the walk moves again');
    expect((await cli(['cancel', second])).out).toBe(`signalled cancel to ${second}`);
    const end = (await client.workflow.getHandle(second).result()) as WalkProgress;
    expect(end.state).toBe('cancelled');
  });
});

