/**
 * The trivial workflow, end to end on the real stack: a `repowalk worker` process (the real
 * command line, as an operator runs it) against the dev server, PostgreSQL and a blob directory.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import { freshDatabase, testStack } from '../test/stack.ts';
import { spawnReadyWorker } from '../test/helpers.ts';
import { ping, type PingInput } from '../workflows/ping.ts';

const ROOT = join(import.meta.dirname, '..');
let worker: ChildProcess;
let client: Client;
let databaseUrl: string;
const prefix = `worker-test-${process.pid}`;
const taskQueue = `${prefix}-maintenance`;

beforeAll(async () => {
  const stack = testStack();
  databaseUrl = await freshDatabase('worker');
  const spawned = await spawnReadyWorker(join(ROOT, 'repowalk'), ['worker'], {
    ...process.env,
    TEMPORAL_ADDRESS: stack.temporal.address,
    DATABASE_URL: databaseUrl,
    REPOWALK_TASK_QUEUE: prefix,
    REPOWALK_BLOB_DIR: mkdtempSync(join(tmpdir(), 'repowalk-blobs-')),
    REPOWALK_STATE_DIR: mkdtempSync(join(tmpdir(), 'repowalk-state-')),
  });
  worker = spawned.child;
  client = new Client({ connection: await Connection.connect({ address: stack.temporal.address }) });
}, 120_000);

afterAll(async () => {
  await client?.connection.close();
  if (worker && worker.exitCode === null) worker.kill('SIGKILL');
});

describe('repowalk worker', () => {
  it('migrated the database at start', async () => {
    const db = new pg.Client({ connectionString: databaseUrl });
    await db.connect();
    const { rows } = await db.query('SELECT count(*)::int AS n FROM schema_migrations');
    await db.end();
    expect(rows[0].n).toBeGreaterThan(0);
  });

  it('runs the ping workflow through PostgreSQL and the blobstore', async () => {
    const result = await client.workflow.execute(ping, { taskQueue, workflowId: `ping-test-${Date.now()}`, args: [{ message: 'héllo' }] });
    expect(result.message).toBe('héllo');
    expect(result.worker).toMatch(/:\d+$/);
    expect(result.postgresVersion).toMatch(/^\d+\.\d+/);
    expect(result.blobstore).toMatch(/^local:/);
    expect(result.roundTripBytes).toBe(new TextEncoder().encode('héllo').length);
  });

  it('sets its search attributes, visible to a list query', async () => {
    const workflowId = `ping-sa-${Date.now()}`;
    await client.workflow.execute(ping, { taskQueue, workflowId, args: [{}] });
    let found: string[] = [];
    for (let i = 0; i < 50 && found.length === 0; i++) {
      found = [];
      for await (const wf of client.workflow.list({ query: `RepowalkKind = 'ping' AND RepowalkState = 'done' AND WorkflowId = '${workflowId}'` })) found.push(wf.workflowId);
      if (found.length === 0) await new Promise((r) => setTimeout(r, 200));
    }
    expect(found).toEqual([workflowId]);
  });

  it('fails bad input at once, naming the field, without retrying', async () => {
    const err = await client.workflow
      .execute(ping, { taskQueue, workflowId: `ping-bad-${Date.now()}`, args: [{ message: 42 } as unknown as PingInput] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const cause = (err as WorkflowFailedError).cause as Error & { type?: string };
    expect(cause.type).toBe('InvalidInput');
    expect(cause.message).toMatch(/invalid ping input: message: .*string/);
  });

  it('stops cleanly on SIGTERM', async () => {
    const exited = new Promise<number | null>((r) => worker.once('exit', (code) => r(code)));
    worker.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});
