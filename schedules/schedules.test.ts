/**
 * `schedule apply` against the real dev server: it creates every schedule, a second apply changes
 * nothing (the server's description is identical), a changed interval is updated in place (same
 * id, same creation), an operator's pause survives, a disabled schedule is deleted; and a
 * schedule triggered by hand runs its workflow on a worker.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { Client, Connection, ScheduleNotFoundError, type ScheduleDescription } from '@temporalio/client';
import { freshDatabase, testStack } from '../test/stack.ts';
import { loadConfig } from '../config/load.ts';
import type { Config } from '../config/options.ts';
import { openPool } from '../storage/db/pool.ts';
import { migrate } from '../storage/db/migrate.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { PgHealQueue } from '../storage/db/heal-queue.ts';
import { readStats } from '../maintenance/stats.ts';
import { startTestWorkers, type TestWorkers } from '../test/maintenance-test-workers.ts';
import { SCHEDULE_NAMES, applySchedules, describeSchedule, listSchedules, scheduleDefinitions } from './schedules.ts';
import { formatApplyReport, formatListing, scheduleCommand } from '../cli/schedule-commands.ts';

const prefix = `sched-${process.pid}-${Date.now().toString(36)}`;
let client: Client;
let config: Config;
let pool: pg.Pool;
let dir: string;
let workers: TestWorkers | undefined;

const ids = () => scheduleDefinitions(config).map((d) => d.scheduleId);

/** What the server says about a schedule, without the parts that move by themselves (next run times). */
// Without the actions taken: a schedule whose interval comes round during the test (the resync
// sweep's is five minutes, on the clock) fires whatever apply did; lastUpdatedAt says if apply wrote.
async function described(id: string): Promise<Omit<ScheduleDescription, 'raw' | 'info'> & { info: Pick<ScheduleDescription['info'], 'createdAt' | 'lastUpdatedAt'> }> {
  const { raw: _raw, info, ...rest } = await describeSchedule(client, id);
  return { ...rest, info: { createdAt: info.createdAt, lastUpdatedAt: info.lastUpdatedAt } };
}

beforeAll(async () => {
  config = loadConfig({ env: { REPOWALK_TASK_QUEUE: prefix }, cwd: tmpdir() });
  client = new Client({ connection: await Connection.connect({ address: testStack().temporal.address }) });
  pool = openPool(await freshDatabase('schedules'));
  await migrate(pool);
  dir = await mkdtemp(join(tmpdir(), 'repowalk-sched-'));
}, 60_000);

const cliPrefix = `${prefix}-cli`;

afterAll(async () => {
  for (const id of [...ids(), ...SCHEDULE_NAMES.map((n) => `${cliPrefix}-${n}`)]) await client?.schedule.getHandle(id).delete().catch(() => {});
  await workers?.stop();
  await client?.connection.close();
  await pool?.end();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('schedule apply', () => {
  it('creates every schedule from configuration', async () => {
    const report = await applySchedules(client, config);
    expect(report.created).toEqual(SCHEDULE_NAMES.map((n) => `${prefix}-${n}`));
    expect(report.updated).toEqual([]);
    const gc = await describeSchedule(client, `${prefix}-gc`);
    // Spread over the day: GC is the fourth of eight schedules.
    expect(gc.spec.intervals?.map((i) => [i.every, i.offset ?? 0])).toEqual([[86400_000, Math.floor((3 * 86400) / 8) * 1000]]);
    const sweepSpec = (await describeSchedule(client, `${prefix}-resync-sweep`)).spec.intervals;
    expect(sweepSpec?.map((i) => [i.every, i.offset ?? 0])).toEqual([[300_000, 0]]);
    expect(gc.action).toMatchObject({ type: 'startWorkflow', workflowType: 'gc', taskQueue: `${prefix}-maintenance`, workflowId: `${prefix}-gc`, args: [{ graceSeconds: 86400, repackBelow: 0.25 }] });
    expect(gc.policies.overlap).toBe('SKIP');
    const sweep = await describeSchedule(client, `${prefix}-resync-sweep`);
    expect(sweep.action.args?.[0]).toMatchObject({ backfillTaskQueue: `${prefix}-backfill`, settings: { filter: { mode: 'full' } } });
    const scrub = await describeSchedule(client, `${prefix}-rotating-scrub`);
    expect(scrub.action.args?.[0]).toEqual({ type: 'scrub', rate: 7, walkTaskQueue: `${prefix}-walk`, walk: { repair: true } });
    // Live sync's refresh, for the repos no subscription covers: on the sync job's queue.
    const refresh = await describeSchedule(client, `${prefix}-refresh`);
    expect(refresh.action).toMatchObject({ type: 'startWorkflow', workflowType: 'refresh', taskQueue: `${prefix}-sync`, workflowId: `${prefix}-refresh` });
    expect(refresh.action.args?.[0]).toMatchObject({ backfillTaskQueue: `${prefix}-backfill`, settings: { filter: { mode: 'full' } } });
    expect(refresh.spec.intervals?.map((i) => [i.every, i.offset ?? 0])).toEqual([[3600_000, Math.floor((7 * 3600) / 8) * 1000]]);
    expect(refresh.policies.overlap).toBe('SKIP');
  });

  it('a second apply changes nothing: it reports every schedule unchanged and the server holds the same state', async () => {
    const before = await Promise.all(ids().map(described));
    const report = await applySchedules(client, config);
    expect(report).toEqual({ created: [], updated: [], unchanged: ids(), deleted: [] });
    expect(await Promise.all(ids().map(described))).toEqual(before);
    expect(formatApplyReport(report)).toBe(ids().map((id) => `unchanged ${id}`).join('\n'));
  });

  it('a changed interval is updated in place: same id, same creation, new spec; the rest untouched', async () => {
    const id = `${prefix}-gc`;
    const before = await described(id);
    const others = await Promise.all(ids().filter((i) => i !== id).map(described));
    const changed: Config = { ...config, schedules: { ...config.schedules, gcSeconds: 7200 } };
    const dry = await applySchedules(client, changed, { dryRun: true });
    expect(dry.updated).toEqual([{ scheduleId: id, changes: [`spec: every 86400 s at +${Math.floor((3 * 86400) / 8)} s → every 7200 s at +${Math.floor((3 * 7200) / 8)} s`] }]);
    expect(await described(id)).toEqual(before);

    const report = await applySchedules(client, changed);
    expect(report.updated).toEqual([{ scheduleId: id, changes: [`spec: every 86400 s at +${Math.floor((3 * 86400) / 8)} s → every 7200 s at +${Math.floor((3 * 7200) / 8)} s`] }]);
    expect(report.unchanged).toEqual(ids().filter((i) => i !== id));
    const after = await describeSchedule(client, id);
    expect(after.scheduleId).toBe(id);
    expect(after.spec.intervals?.map((i) => [i.every, i.offset ?? 0])).toEqual([[7200_000, Math.floor((3 * 7200) / 8) * 1000]]);
    expect(after.info.createdAt).toEqual(before.info.createdAt);
    expect(after.info.lastUpdatedAt).not.toEqual(before.info.lastUpdatedAt);
    expect(after.action).toEqual(before.action);
    expect(await Promise.all(ids().filter((i) => i !== id).map(described))).toEqual(others);
    // And applying the new configuration again changes nothing.
    expect((await applySchedules(client, changed)).unchanged).toEqual(ids());
    config = changed;
  });

  it('a changed input is updated in place too', async () => {
    const changed: Config = { ...config, maintenance: { ...config.maintenance, rotatingSampleRate: 5 } };
    const report = await applySchedules(client, changed);
    expect(report.updated.map((u) => u.scheduleId)).toEqual([`${prefix}-rotating-scrub`, `${prefix}-rotating-validate`]);
    expect(report.updated[0]!.changes.join()).toMatch(/^input: .*"rate":7.* → .*"rate":5/);
    expect((await describeSchedule(client, `${prefix}-rotating-validate`)).action.args?.[0]).toMatchObject({ rate: 5 });
    config = changed;
  });

  it("an operator's pause survives an apply", async () => {
    const handle = client.schedule.getHandle(`${prefix}-stats`);
    await handle.pause('paused by the operator');
    const report = await applySchedules(client, { ...config, schedules: { ...config.schedules, statsSeconds: 600 } });
    expect(report.updated.map((u) => u.scheduleId)).toEqual([`${prefix}-stats`]);
    const desc = await describeSchedule(client, `${prefix}-stats`);
    expect(desc.state).toMatchObject({ paused: true, note: 'paused by the operator' });
    expect(desc.spec.intervals?.map((i) => i.every)).toEqual([600_000]);
    await handle.unpause();
    await applySchedules(client, config);
  });

  it('a disabled schedule is deleted, and created again when enabled', async () => {
    const disabled: Config = { ...config, schedules: { ...config.schedules, disabled: ['rotating-scrub'] } };
    const report = await applySchedules(client, disabled);
    expect(report.deleted).toEqual([`${prefix}-rotating-scrub`]);
    expect(report.unchanged.length).toBe(SCHEDULE_NAMES.length - 1);
    await expect(describeSchedule(client, `${prefix}-rotating-scrub`)).rejects.toBeInstanceOf(ScheduleNotFoundError);
    expect((await applySchedules(client, disabled)).deleted).toEqual([]);
    expect((await applySchedules(client, config)).created).toEqual([`${prefix}-rotating-scrub`]);
  });

  it('schedule list shows them', async () => {
    let list: Awaited<ReturnType<typeof listSchedules>> = [];
    const end = Date.now() + 20_000;
    // The list is a visibility query: it catches up with creates and updates shortly after.
    while (Date.now() < end) {
      list = await listSchedules(client, { prefix: `${prefix}-` });
      if (list.length === SCHEDULE_NAMES.length && list.find((s) => s.scheduleId === `${prefix}-gc`)?.everySeconds[0] === 7200) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(list.map((s) => s.scheduleId)).toEqual([...ids()].sort());
    expect(list.find((s) => s.scheduleId === `${prefix}-gc`)).toMatchObject({ workflowType: 'gc', everySeconds: [7200], paused: false });
    expect(formatListing(list)).toMatch(new RegExp(`${prefix}-gc +gc +every 7200 s +active`));
  });
});

describe('a schedule triggered by hand', () => {
  it('runs its workflow on the maintenance queue', async () => {
    workers = await startTestWorkers({ address: testStack().temporal.address, prefix, stores: { pool, blobs: new LocalBlobStore(dir), healQueue: new PgHealQueue(pool) } });
    const handle = client.schedule.getHandle(`${prefix}-stats`);
    const runs = async () => (await describeSchedule(client, `${prefix}-stats`)).info.recentActions.map((a) => a.action.workflow.workflowId);
    // The stats schedule also fires on its own, every 300 s on the clock: runs it took before the
    // workers started are not the trigger's.
    const before = new Set(await runs());
    await handle.trigger();
    let workflowId: string | undefined;
    // The schedule's workflow starts the run with a local activity of the server's own worker,
    // retried with backoff when it fails: on a loaded server (the CI runs e2e files side by side)
    // that can take tens of seconds.
    const end = Date.now() + 75_000;
    while (!workflowId && Date.now() < end) {
      workflowId = (await runs()).find((id) => !before.has(id));
      if (!workflowId) await new Promise((r) => setTimeout(r, 200));
    }
    const info = (await describeSchedule(client, `${prefix}-stats`)).info;
    expect(workflowId, `no run after the trigger; the schedule's info: ${JSON.stringify(info)}`).toMatch(new RegExp(`^${prefix}-stats`));
    const result = await client.workflow.getHandle(workflowId!).result();
    expect(result).toMatchObject({ repos: { total: 0 }, blocks: { count: 0 } });
    // The stored row is what the last run to finish collected: the trigger's, or one the interval
    // took that ran at the same time once the workers were up. Wait for every run the schedule
    // took, then find the row among their results.
    const results = new Map<string, unknown>([[workflowId!, result]]);
    for (let ids = await runs(); ids.some((id) => !results.has(id)); ids = await runs()) {
      for (const id of ids) if (!results.has(id)) results.set(id, await client.workflow.getHandle(id).result());
    }
    expect([...results.values()]).toContainEqual(await readStats(pool));
    const desc = await client.workflow.getHandle(workflowId!).describe();
    expect(desc.searchAttributes).toMatchObject({ RepowalkKind: ['maintenance/stats'], RepowalkState: ['done'] });
  }, 150_000);
});

describe('repowalk schedule', () => {
  async function run(args: string[]): Promise<{ code: number; out: string }> {
    const cli = loadConfig({ env: { REPOWALK_TASK_QUEUE: cliPrefix, TEMPORAL_ADDRESS: testStack().temporal.address }, cwd: dir });
    const lines: string[] = [];
    const spy = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void lines.push(a.join(' ')));
    try {
      return { code: await scheduleCommand(cli, args), out: lines.join('\n') };
    } finally {
      spy.mockRestore();
    }
  }

  it('apply, apply again, trigger; bad arguments are refused before any server is asked', async () => {
    const first = await run(['apply']);
    expect(first.code).toBe(0);
    expect(first.out.split('\n')).toEqual(SCHEDULE_NAMES.map((n) => `created ${cliPrefix}-${n}`));
    expect((await run(['apply', '--dry-run'])).out.split('\n')).toEqual(SCHEDULE_NAMES.map((n) => `unchanged ${cliPrefix}-${n}`));
    expect((await run(['trigger', 'stats'])).out).toBe(`triggered ${cliPrefix}-stats (stats on ${cliPrefix}-maintenance)`);
    await expect(run(['trigger', 'nope'])).rejects.toThrow(/schedule trigger takes one of resync-sweep, /);
    await expect(run(['frobnicate'])).rejects.toThrow(/expected apply, list or trigger/);
    await expect(run(['apply', 'extra'])).rejects.toThrow(/takes no arguments/);
  });
});
