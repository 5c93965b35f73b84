import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { JOBS, checkJobConfig, selectJobs, JobConfigError, UnknownJobError } from './jobs.ts';
import { taskQueueFor } from '../config/task-queues.ts';
import { runWorker } from './worker.ts';
import { backfillRepo, backfillRepoStateQuery } from '../workflows/backfill-repo.ts';
import { loadConfig } from '../config/load.ts';
import { resolveEndpoints } from '../config/resolve.ts';
import { freshDatabase, testStack } from '../test/stack.ts';
import * as workflows from '../workflows/index.ts';

describe('selectJobs', () => {
  const names = (jobs: { name: string }[]) => jobs.map((j) => j.name);
  it('runs every job by default', () => {
    expect(names(selectJobs([], [], []))).toEqual(JOBS.filter((j) => !('optIn' in j && j.optIn)).map((j) => j.name));
  });
  it('runs the jobs asked for, within the allowlist, the blocklist winning', () => {
    expect(names(selectJobs(['walk', 'backfill'], [], []))).toEqual(['backfill', 'walk']);
    expect(names(selectJobs([], ['walk', 'maintenance'], []))).toEqual(['walk', 'maintenance']);
    expect(names(selectJobs(['walk', 'backfill'], [], ['backfill']))).toEqual(['walk']);
    expect(names(selectJobs([], ['backfill', 'walk'], ['walk']))).toEqual(['backfill']);
  });
  it('refuses an unknown name anywhere, listing the known ones', () => {
    expect(() => selectJobs(['walker'], [], [])).toThrow(/unknown job "walker" in --job; known jobs: backfill, walk, maintenance/);
    expect(() => selectJobs([], ['x'], [])).toThrow(/in REPOWALK_JOBS_ALLOW/);
    expect(() => selectJobs([], [], ['y'])).toThrow(UnknownJobError);
  });
  it('checks the configuration against each selected job\'s own schema, naming job and option', () => {
    const config = loadConfig({ env: { REPOWALK_PDS_CONCURRENCY: '500' } });
    expect(() => checkJobConfig(selectJobs(['walk'], [], []), config)).not.toThrow();
    expect(() => checkJobConfig(selectJobs(['backfill', 'walk'], [], []), config)).toThrow(/job backfill: network\.pdsConcurrency: .*64/);
    expect(() => checkJobConfig(selectJobs(['backfill'], [], []), config)).toThrow(JobConfigError);
  });
  it('says which schedules each job owns', () => {
    expect(JOBS.find((j) => j.name === 'maintenance')!.schedules).toContain('gc');
    expect(JOBS.filter((j) => j.schedules.length > 0).map((j) => j.name)).toEqual(['maintenance']);
  });
  it('refuses a selection that leaves nothing to run', () => {
    expect(() => selectJobs(['walk'], [], ['walk'])).toThrow(/no job left to run/);
  });
  it('puts every workflow the worker bundles in exactly one job, and lists nothing else', () => {
    const listed = JOBS.flatMap((j) => [...j.workflows]);
    expect(new Set(listed).size).toBe(listed.length);
    expect([...listed].sort()).toEqual(Object.keys(workflows).sort());
    for (const [name, fn] of Object.entries(workflows)) expect([name, typeof fn, fn.name]).toEqual([name, 'function', name]);
  });
});

describe('job isolation on the real dev server', () => {
  let client: Client;
  const prefix = `jobs-test-${process.pid}`;
  beforeAll(async () => {
    client = new Client({ connection: await Connection.connect({ address: testStack().temporal.address }) });
  });
  afterAll(async () => client?.connection.close());

  it('a worker running only walk never picks up backfill work; a backfill worker does', async () => {
    const stack = testStack();
    const config = loadConfig({
      env: {
        TEMPORAL_ADDRESS: stack.temporal.address,
        DATABASE_URL: await freshDatabase('jobs'),
        REPOWALK_TASK_QUEUE: prefix,
        REPOWALK_BLOB_DIR: mkdtempSync(join(tmpdir(), 'repowalk-jobs-')),
        REPOWALK_STATE_DIR: mkdtempSync(join(tmpdir(), 'repowalk-jobs-state-')),
      },
    });
    const endpoints = resolveEndpoints(config);
    const start = async (job: string) => {
      const stop = new AbortController();
      let ready!: () => void;
      const up = new Promise<void>((r) => (ready = r));
      const done = runWorker({ config, endpoints, jobs: selectJobs([job], [], []), signal: stop.signal, onReady: () => ready(), handleSignals: false });
      await Promise.race([up, done]);
      return { stop: async () => (stop.abort(), await done) };
    };

    const walkOnly = await start('walk');
    // A did whose PLC lookup fails at once: the workflow's first step is what we watch for.
    const handle = await client.workflow.start(backfillRepo, {
      taskQueue: taskQueueFor(config, 'backfill'),
      workflowId: `${prefix}/backfill`,
      args: [{ did: 'did:plc:aaaaaaaaaaaaaaaaaaaaaaaa', settings: { backoff: { initialSeconds: 3600, maxSeconds: 3600, jitter: 0 } } }],
    });
    await new Promise((r) => setTimeout(r, 2000));
    const before = await handle.fetchHistory();
    // Started and scheduled, never picked up: no WorkflowTaskStarted on the backfill queue.
    expect(before.events?.map((e) => e.eventType)).toEqual([1, 5]); // WORKFLOW_EXECUTION_STARTED, WORKFLOW_TASK_SCHEDULED
    await walkOnly.stop();

    const backfillOnly = await start('backfill');
    let state = '';
    for (let i = 0; i < 100 && state !== 'backoff'; i++) {
      state = (await handle.query(backfillRepoStateQuery).catch(() => ({ state: '' }))).state;
      if (state !== 'backoff') await new Promise((r) => setTimeout(r, 200));
    }
    expect(state).toBe('backoff');
    await handle.terminate('test done');
    await backfillOnly.stop();
  }, 60_000);
});
