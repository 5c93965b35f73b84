/**
 * Workers of several task queues share one workflow thread: each runs its queue's workflows,
 * and one shutting down leaves the thread to the others.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, type Worker } from '@temporalio/worker';
import { freshDatabase, testStack } from '../test/stack.ts';
import { workflowBundleCode } from '../test/workflow-bundle.ts';
import { openPool } from '../storage/db/pool.ts';
import { LocalBlobStore } from '../storage/blobstore/local.ts';
import { pingActivities } from '../activities/ping.ts';
import { ping } from '../workflows/ping.ts';
import { SharedWorkflows } from './shared-workflows.ts';

const queue = (n: number) => `shared-workflows-${process.pid}-${n}`;
let client: Client;
let connection: NativeConnection;
let pool: ReturnType<typeof openPool>;
const workers: { worker: Worker; run: Promise<void> }[] = [];

beforeAll(async () => {
  const stack = testStack();
  pool = openPool(await freshDatabase('shared_workflows'));
  const activities = pingActivities({ pool, blobs: new LocalBlobStore(mkdtempSync(join(tmpdir(), 'repowalk-shared-'))) });
  connection = await NativeConnection.connect({ address: stack.temporal.address });
  client = new Client({ connection: await Connection.connect({ address: stack.temporal.address }) });
  const shared = new SharedWorkflows(Object.keys(activities));
  const code = await workflowBundleCode();
  for (const n of [1, 2]) {
    const worker = await shared.create({ connection, taskQueue: queue(n), workflowBundle: { code }, activities });
    workers.push({ worker, run: worker.run() });
  }
}, 120_000);

afterAll(async () => {
  for (const { worker, run } of workers) {
    if (worker.getState() === 'RUNNING') worker.shutdown();
    await run.catch(() => {});
  }
  await client?.connection.close();
  await connection?.close();
  await pool?.end();
});

describe('SharedWorkflows', () => {
  it("runs each queue's workflows, and a Worker's shutdown leaves the shared thread to the others", async () => {
    const run = (n: number) => client.workflow.execute(ping, { taskQueue: queue(n), workflowId: `shared-${n}-${Date.now()}`, args: [{ message: `q${n}` }] });
    expect((await run(1)).message).toBe('q1');
    expect((await run(2)).message).toBe('q2');
    workers[0]!.worker.shutdown();
    await workers[0]!.run;
    expect((await run(2)).message).toBe('q2');
  }, 60_000);
});
