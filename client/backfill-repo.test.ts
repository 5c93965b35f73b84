/**
 * The one rule for starting `backfill/<did>` from outside a workflow, on the real dev server (no
 * worker polls the queue, so a started run stays running): a first request starts it with the
 * settings given; another one leaves it alone (live sync) or signals it to try now (an operator's
 * resync); once it has ended, a request starts a new run.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import { testStack } from '../test/stack.ts';
import { startBackfillRepo } from './backfill-repo.ts';

let client: Client;
const queue = `backfill-repo-start-${process.pid}-${Date.now().toString(36)}`;
const did = `did:plc:startrule${Date.now().toString(36)}`;

beforeAll(async () => {
  client = new Client({ connection: await Connection.connect({ address: testStack().temporal.address }), namespace: testStack().temporal.namespace });
});
afterAll(async () => {
  await client?.workflow.getHandle(`backfill/${did}`).terminate('test over').catch(() => {});
  await client?.connection.close();
});

describe('startBackfillRepo', () => {
  it('starts once, then leaves a running one alone or signals it; after it ends, starts anew', async () => {
    const req = { did, settings: { blobs: true }, taskQueue: queue, reason: 'live sync: since gap' };
    expect(await startBackfillRepo(client, { ...req, ifRunning: 'leave' })).toBe('started');
    const handle = client.workflow.getHandle(`backfill/${did}`);
    const first = await handle.describe();
    expect(first.taskQueue).toBe(queue);
    expect(first.type).toBe('backfillRepo');
    expect(await startBackfillRepo(client, { ...req, ifRunning: 'leave' })).toBe('running');
    expect(await startBackfillRepo(client, { ...req, ifRunning: 'resync-now' })).toBe('signalled');
    const history = await handle.fetchHistory();
    const signals = history.events!.filter((e) => e.workflowExecutionSignaledEventAttributes).map((e) => e.workflowExecutionSignaledEventAttributes!.signalName);
    expect(signals).toEqual(['resyncNow']);
    await handle.terminate('test: the run ends');
    expect(await startBackfillRepo(client, { ...req, ifRunning: 'resync-now' })).toBe('started');
    expect((await handle.describe()).runId).not.toBe(first.runId);
  });
});
