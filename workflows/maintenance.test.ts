/**
 * The maintenance workflows on the real dev server, with workers in this process: the resync
 * sweep (and the gone re-check) start `backfill/<did>` exactly for the due repos that have no
 * running workflow — including one terminated by hand — and leave running ones alone; the
 * rotating walk covers the mirror exactly once in R runs; gc, retention and stats run end to end.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import { freshDatabase, testStack } from '../test/stack.ts';
import { openPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { PgHealQueue } from '../storage/db/heal-queue.ts';
import { getRepoRow, markGone, markResync } from '../backfill/repo-state.ts';
import { buildMirror, testDids } from '../test/mirror.ts';
import { readRotation } from '../maintenance/rotation.ts';
import { readStats } from '../maintenance/stats.ts';
import { backfillRepo, backfillRepoStateQuery } from './backfill-repo.ts';
import { resyncSweep, type SweepInput } from './resync-sweep.ts';
import { goneRecheck } from './gone-recheck.ts';
import { sweepProgressQuery } from './sweep.ts';
import { cancelSignal, pauseSignal, resumeSignal } from './control.ts';
import { walkProgressQuery } from './walk.ts';
import { rotatingWalk, rotatingWalkProgressQuery, type RotatingWalkInput, type RotatingWalkResult } from './rotating-walk.ts';
import { gc as gcWorkflow } from './gc.ts';
import { retention as retentionWorkflow } from './retention.ts';
import { stats as statsWorkflow } from './stats.ts';
import { startTestWorkers, type TestWorkers } from '../test/maintenance-test-workers.ts';

let pool: pg.Pool;
let dir: string;
let client: Client;
let workers: TestWorkers;
const prefix = `maint-wf-${process.pid}-${Date.now().toString(36)}`;
const mirror = testDids('maintwf', 4);
const [running, terminated, never, notDue, gone] = testDids('maintsweep', 5) as [string, string, string, string, string];
const [stillGone] = testDids('maintgone', 1) as [string];
/** The DIDs the gone re-check asked getRepoStatus about (the stand-in PDS: only `stillGone` is still deactivated). */
const asked: string[] = [];

async function waitFor(cond: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const backfillState = (did: string) => client.workflow.getHandle(`backfill/${did}`).query(backfillRepoStateQuery);

beforeAll(async () => {
  pool = openPool(await freshDatabase('maint_wf'));
  await migrate(pool);
  dir = await mkdtemp(join(tmpdir(), 'repowalk-maint-wf-'));
  const blobs = new LocalBlobStore(dir);
  await buildMirror({ pool, blobs }, mirror.map((did, i) => ({ did, records: 30 + 10 * i })));
  const past = new Date(Date.now() - 60_000);
  for (const did of [running, terminated, never]) await markResync(pool, did, { kind: 'transport', count: 2, nextRetryAt: past, error: 'reset' });
  await markResync(pool, notDue, { kind: 'error', count: 1, nextRetryAt: new Date(Date.now() + 3600_000), error: 'bad' });
  await markGone(pool, gone, { status: 'deactivated', recheckAt: past, detail: 'RepoDeactivated' });
  await markGone(pool, stillGone, { status: 'deactivated', recheckAt: past, detail: 'RepoDeactivated' });
  client = new Client({ connection: await Connection.connect({ address: testStack().temporal.address }) });
  workers = await startTestWorkers({
    address: testStack().temporal.address,
    prefix,
    stores: { pool, blobs, healQueue: new PgHealQueue(pool) },
    repoStatus: async (did) => {
      asked.push(did);
      return did === stillGone ? { did, active: false, status: 'deactivated' } : { did, active: true };
    },
  });
}, 180_000);

afterAll(async () => {
  for (const did of [running, terminated, never, gone, stillGone]) await client?.workflow.getHandle(`backfill/${did}`).terminate('test over').catch(() => {});
  await workers?.stop();
  await client?.connection.close();
  await pool?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('resync sweep', () => {
  it('starts backfillRepo for a due repo whose workflow was terminated by hand, and not for one whose workflow is running', async () => {
    // Two repos had their workflow: one still waits in backoff, one was terminated by hand.
    for (const did of [running, terminated]) {
      await client.workflow.start(backfillRepo, { taskQueue: workers.queues.backfill, workflowId: `backfill/${did}`, args: [{ did }] });
      await waitFor(async () => (await backfillState(did).catch(() => undefined))?.state === 'backoff', 20_000, `${did} in backoff`);
    }
    const runningRun = (await client.workflow.getHandle(`backfill/${running}`).describe()).runId;
    const terminatedHandle = client.workflow.getHandle(`backfill/${terminated}`);
    const terminatedRun = (await terminatedHandle.describe()).runId;
    await terminatedHandle.terminate('by hand, in the test');

    const p = await client.workflow.execute(resyncSweep, {
      taskQueue: workers.queues.maintenance,
      workflowId: `${prefix}-resync-sweep`,
      args: [{ backfillTaskQueue: workers.queues.backfill, pageSize: 2 }],
    });
    expect(p).toMatchObject({ kind: 'resync', state: 'done', due: 3, started: 2, running: 1, pages: 2 });
    expect(p.startedDids.sort()).toEqual([terminated, never].sort());

    // The running one kept its run; the terminated one and the one that never had one got a new run.
    expect((await client.workflow.getHandle(`backfill/${running}`).describe()).runId).toBe(runningRun);
    const again = await terminatedHandle.describe();
    expect(again.runId).not.toBe(terminatedRun);
    expect(again.status.name).toBe('RUNNING');
    for (const did of [terminated, never]) {
      await waitFor(async () => (await backfillState(did).catch(() => undefined))?.state === 'backoff', 20_000, `${did} retried`);
      // Its backoff continues from the repo's retry count.
      expect((await backfillState(did)).retryCount).toBe(3);
    }
    expect(workers.attempts.filter((d) => d === notDue)).toEqual([]);

    let listed = 0;
    await waitFor(async () => {
      listed = 0;
      for await (const _ of client.workflow.list({ query: `RepowalkKind = 'maintenance/resync-sweep' AND RepowalkState = 'done' AND WorkflowId = '${prefix}-resync-sweep'` })) listed++;
      return listed === 1;
    }, 15_000, 'search attributes');

    // A second sweep finds them all running.
    const second = await client.workflow.execute(resyncSweep, {
      taskQueue: workers.queues.maintenance,
      workflowId: `${prefix}-resync-sweep-2`,
      args: [{ backfillTaskQueue: workers.queues.backfill }],
    });
    expect(second).toMatchObject({ due: 3, started: 0, running: 3 });
  });

  it('the gone re-check asks getRepoStatus of each due gone repo and starts only those active again', async () => {
    const events = async () => Number((await pool.query(`SELECT count(*) AS n FROM events WHERE did = $1`, [stillGone])).rows[0].n);
    const eventsBefore = await events();
    const p = await client.workflow.execute(goneRecheck, {
      taskQueue: workers.queues.maintenance,
      workflowId: `${prefix}-gone-recheck`,
      args: [{ backfillTaskQueue: workers.queues.backfill, settings: { goneRecheckSeconds: 3600 } }],
    });
    expect(p).toMatchObject({ kind: 'gone', state: 'done', due: 2, started: 1, stillGone: 1, startedDids: [gone] });
    expect(asked.sort()).toEqual([gone, stillGone].sort());
    // Still deactivated: not backfilled, re-checked an hour on, no second account event.
    const row = (await getRepoRow(pool, stillGone))!;
    expect(row).toMatchObject({ status: 'gone', goneStatus: 'deactivated' });
    expect(row.nextRetryAt!.getTime()).toBeGreaterThan(Date.now() + 3500_000);
    expect(await events()).toBe(eventsBefore);
    await waitFor(async () => workers.attempts.includes(gone), 20_000, 'the active repo backfilled');
    expect(workers.attempts).not.toContain(stillGone);
  });

  it('fails bad input at once, naming the field', async () => {
    const err = await client.workflow
      .execute(resyncSweep, { taskQueue: workers.queues.maintenance, workflowId: `${prefix}-bad`, args: [{ pageSize: 0 } as unknown as SweepInput] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const cause = (err as WorkflowFailedError).cause as Error & { type?: string };
    expect(cause.type).toBe('InvalidInput');
    expect(cause.message).toMatch(/backfillTaskQueue/);
    expect(cause.message).toMatch(/pageSize/);
  });
});

describe('rotating walk', () => {
  it('R runs of the rotating validate check every node exactly once, the offset advancing one step per run', async () => {
    const rate = 3;
    const runs: RotatingWalkResult[] = [];
    for (let i = 0; i < rate; i++) {
      runs.push(
        await client.workflow.execute(rotatingWalk, {
          taskQueue: workers.queues.maintenance,
          workflowId: `${prefix}-rotating-${i}`,
          args: [{ type: 'validate', rate, walkTaskQueue: workers.queues.walk, walk: { slices: 2 } }],
        }),
      );
    }
    expect(runs.map((r) => r.offset)).toEqual([0, 1, 2]);
    expect(runs.map((r) => r.walk.state)).toEqual(['done', 'done', 'done']);
    expect(runs.map((r) => r.walkId)).toEqual([0, 1, 2].map((i) => `${prefix}-rotating-${i}/walk`));
    // Every run walks everything; each checks its own slice; together exactly everything, once.
    const walked = runs[0]!.walk.totals.types;
    for (const type of ['Repo', 'Commit', 'MstNode', 'Record', 'RecordRow', 'Event'] as const) {
      expect(walked[type]?.walked, type).toBeGreaterThan(0);
      for (const r of runs) expect(r.walk.totals.types[type]?.walked, type).toBe(walked[type]?.walked);
      const checked = runs.map((r) => r.walk.totals.types[type]?.checked ?? 0);
      expect(checked.reduce((a, b) => a + b, 0), type).toBe(walked[type]?.walked);
    }
    for (const r of runs) expect(r.walk.totals.findings).toEqual({});
    expect(await readRotation(pool, 'rotating-validate')).toMatchObject({ rate, next: 0, cycle: 1, runs: rate });
  });

  it('a bad walk option fails the run at once, before it claims an offset', async () => {
    const before = await readRotation(pool, 'rotating-validate');
    const err = await client.workflow
      .execute(rotatingWalk, { taskQueue: workers.queues.maintenance, workflowId: `${prefix}-rotating-bad`, args: [{ type: 'validate', rate: 3, walkTaskQueue: workers.queues.walk, walk: { checks: ['no-such-check'] } } satisfies RotatingWalkInput] })
      .catch((e: unknown) => e);
    expect(((err as WorkflowFailedError).cause as Error).message).toMatch(/checks/);
    expect(await readRotation(pool, 'rotating-validate')).toEqual(before);
  });
});

describe('gc, retention, stats', () => {
  it('each runs end to end on the maintenance queue', async () => {
    const gc = await client.workflow.execute(gcWorkflow, { taskQueue: workers.queues.maintenance, workflowId: `${prefix}-gc`, args: [{ graceSeconds: 3600 }] });
    expect(gc.state).toBe('done');
    if (gc.state === 'done') expect(gc.mark).toMatchObject({ complete: true, repos: 10 });
    const retention = await client.workflow.execute(retentionWorkflow, { taskQueue: workers.queues.maintenance, workflowId: `${prefix}-retention`, args: [{}] });
    expect(retention).toMatchObject({ trimmed: 0, done: true });
    const stats = await client.workflow.execute(statsWorkflow, { taskQueue: workers.queues.maintenance, workflowId: `${prefix}-stats`, args: [] });
    expect(stats).toMatchObject({ repos: { total: 10 } });
    expect(await readStats(pool)).toEqual(stats);
  });
});

describe('pause, resume and cancel of the maintenance workflows', () => {
  const attr = async (id: string) => (await client.workflow.getHandle(id).describe()).searchAttributes.RepowalkState?.[0];
  // asOf in 2000: nothing is due, so a resumed sweep pages once and ends; these tests touch no repo.
  const sweepArgs = (): [SweepInput] => [{ backfillTaskQueue: workers.queues.backfill, asOf: '2000-01-01T00:00:00.000Z' }];

  for (const [type, workflow] of [['resyncSweep', resyncSweep], ['goneRecheck', goneRecheck]] as const) {
    it(`${type}: paused from its first task it does nothing; resume finishes it, cancel ends it`, async () => {
      const id = `${prefix}-${type}-pause`;
      const handle = await client.workflow.signalWithStart(workflow, { taskQueue: workers.queues.maintenance, workflowId: id, args: sweepArgs(), signal: pauseSignal, signalArgs: [] });
      await waitFor(async () => (await handle.query(sweepProgressQuery)).state === 'paused' && (await attr(id)) === 'paused', 30_000, 'paused');
      await new Promise((r) => setTimeout(r, 1000));
      expect((await handle.query(sweepProgressQuery)).pages).toBe(0);
      await handle.signal(resumeSignal);
      expect(await handle.result()).toMatchObject({ state: 'done', pages: 1, started: 0 });
      expect(await attr(id)).toBe('done');

      const cid = `${prefix}-${type}-cancel`;
      const c = await client.workflow.signalWithStart(workflow, { taskQueue: workers.queues.maintenance, workflowId: cid, args: sweepArgs(), signal: pauseSignal, signalArgs: [] });
      await waitFor(async () => (await c.query(sweepProgressQuery)).state === 'paused', 30_000, 'paused');
      await c.signal(cancelSignal);
      expect(await c.result()).toMatchObject({ state: 'cancelled', pages: 0 });
      expect(await attr(cid)).toBe('cancelled');
    });
  }

  it('gc: a cancel stops the run, which says so', async () => {
    const id = `${prefix}-gc-cancel`;
    const handle = await client.workflow.signalWithStart(gcWorkflow, { taskQueue: workers.queues.maintenance, workflowId: id, args: [{ graceSeconds: 3600 }], signal: cancelSignal, signalArgs: [] });
    expect(await handle.result()).toEqual({ state: 'cancelled' });
    expect(await attr(id)).toBe('cancelled');
  });

  it('rotatingWalk: a pause that comes before its walk exists reaches the walk once it starts', async () => {
    const name = `rotating-early-pause-${process.pid}`;
    const id = `${prefix}-rotating-early-pause`;
    // signalWithStart: the pause is handled before the workflow's first activity, so before the child.
    const handle = await client.workflow.signalWithStart(rotatingWalk, {
      taskQueue: workers.queues.maintenance,
      workflowId: id,
      args: [{ type: 'validate', rate: 2, name, walkTaskQueue: workers.queues.walk, walk: { slices: 1, tailIntervalSeconds: 3600 } }],
      signal: pauseSignal,
      signalArgs: [],
    });
    const walk = client.workflow.getHandle(`${id}/walk`);
    await waitFor(async () => (await walk.query(walkProgressQuery).catch(() => undefined))?.state === 'paused', 30_000, 'the walk paused');
    expect(await handle.query(rotatingWalkProgressQuery)).toMatchObject({ state: 'paused' });
    await handle.signal(cancelSignal);
    expect((await handle.result()).walk.state).toBe('cancelled');
  });

  it('rotatingWalk: pause, resume and cancel reach its walk; a cancelled run does not advance the rotation', async () => {
    const name = `rotating-signals-${process.pid}`;
    const id = `${prefix}-rotating-signals`;
    // A tail interval keeps the child walk running after its pass, so the signals find it alive.
    const handle = await client.workflow.start(rotatingWalk, {
      taskQueue: workers.queues.maintenance,
      workflowId: id,
      args: [{ type: 'validate', rate: 2, name, walkTaskQueue: workers.queues.walk, walk: { slices: 1, tailIntervalSeconds: 3600 } }],
    });
    const walk = client.workflow.getHandle(`${id}/walk`);
    const walkState = async () => (await walk.query(walkProgressQuery)).state as string;
    await waitFor(async () => (await walkState().catch(() => '')) === 'tailing', 60_000, 'the walk tailing');
    await handle.signal(pauseSignal);
    await waitFor(async () => (await walkState()) === 'paused', 15_000, 'the walk paused');
    expect(await handle.query(rotatingWalkProgressQuery)).toMatchObject({ state: 'paused' });
    await handle.signal(resumeSignal);
    await waitFor(async () => (await walkState()) !== 'paused', 15_000, 'the walk resumed');
    expect(await handle.query(rotatingWalkProgressQuery)).toMatchObject({ state: 'running' });
    const before = await readRotation(pool, name);
    await handle.signal(cancelSignal);
    const result = await handle.result();
    expect(result.walk.state).toBe('cancelled');
    expect(result.rotation).toBeUndefined();
    expect(await readRotation(pool, name)).toEqual(before);
    expect(await attr(id)).toBe('cancelled');
  });
});
