/**
 * Records the histories `replay.test.ts` replays: real runs of the long-lived workflows on the
 * test stack's dev server, driven through the paths a code change could break (backoff timers,
 * pause and resume, resync-now, hand-over to a child, continue-as-new, tail passes, cancel).
 * Walk and maintenance activities are the real ones over a real mirror; backfill activities are
 * the stand-ins of `test/maintenance-test-workers.ts`, scripted per DID (a history holds an
 * activity's result, not how it was computed).
 *
 * It runs only when asked, and rewrites the fixtures:
 *
 *   REPOWALK_RECORD_HISTORIES=1 ./scripts/test test/replay/record-histories.test.ts
 *
 * Record again when a workflow changes on purpose (a new version, or no workflow of the old code
 * is running anywhere); never to make a failing replay pass.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import type { Workflow } from '@temporalio/common';
import { freshDatabase, testStack } from '../stack.ts';
import { waitFor } from '../helpers.ts';
import { buildMirror, testDids } from '../mirror.ts';
import { startTestWorkers, type TestWorkers } from '../maintenance-test-workers.ts';
import { openPool } from '../../storage/db/pool.ts';
import { migrate } from '../../storage/db/migrate.ts';
import { LocalBlobStore } from '../../storage/blobstore/local.ts';
import { PgHealQueue } from '../../storage/db/heal-queue.ts';
import { markResync } from '../../backfill/repo-state.ts';
import type { RepoOutcome } from '../../backfill/settings.ts';
import { backfillRepo, backfillRepoStateQuery, cancelSignal, pauseSignal, resumeSignal, resyncNowSignal } from '../../workflows/backfill-repo.ts';
import { backfill, backfillProgressQuery } from '../../workflows/backfill.ts';
import { walk, walkProgressQuery } from '../../workflows/walk.ts';
import { resyncSweep } from '../../workflows/resync-sweep.ts';
import { rotatingWalk } from '../../workflows/rotating-walk.ts';
import { HISTORIES_DIR, historyToObject, type RecordedHistory } from './histories.ts';

const RECORD = process.env.REPOWALK_RECORD_HISTORIES === '1';

let pool: pg.Pool;
let dir: string;
let client: Client;
let workers: TestWorkers;
const prefix = `replay-${process.pid}-${Date.now().toString(36)}`;
const mirror = testDids('replay', 4);
const [flaky, imported, skipped, handedOver, gone, dropped, cancelled, due] = testDids('replaybf', 8) as [string, string, string, string, string, string, string, string];

/** What each DID's attempts come to, in order; the last one repeats. */
const script: Record<string, RepoOutcome[]> = {
  [flaky]: [
    { did: flaky, kind: 'retry', resync: 'transport', error: 'stand-in: connection reset' },
    { did: flaky, kind: 'retry', resync: 'rate-limited', error: 'stand-in: 429', retryAfterMs: 5_000 },
    { did: flaky, kind: 'imported', rev: '3l4bmq3xq2k2a', created: 3, updated: 0, deleted: 0, unchanged: 0, newBlocks: 5, packBytes: 900, blobs: 0, missingBlobs: 0 },
  ],
  [imported]: [{ did: imported, kind: 'imported', rev: '3l4bmq3xq2k2b', created: 2, updated: 1, deleted: 0, unchanged: 4, newBlocks: 4, packBytes: 700, blobs: 1, missingBlobs: 0 }],
  [skipped]: [{ did: skipped, kind: 'skipped', rev: '3l4bmq3xq2k2c' }],
  [handedOver]: [
    { did: handedOver, kind: 'retry', resync: 'error', error: 'stand-in: bad block' },
    { did: handedOver, kind: 'imported', rev: '3l4bmq3xq2k2d', created: 1, updated: 0, deleted: 0, unchanged: 0, newBlocks: 3, packBytes: 400, blobs: 0, missingBlobs: 0 },
  ],
  [gone]: [{ did: gone, kind: 'gone', status: 'deactivated' }],
  [dropped]: [{ did: dropped, kind: 'dropped', reason: 'stand-in: no signal collection' }],
  [cancelled]: [{ did: cancelled, kind: 'retry', resync: 'transport', error: 'stand-in: timeout' }],
  [due]: [{ did: due, kind: 'skipped', rev: '3l4bmq3xq2k2e' }],
};
/** The DIDs of the default page size's scenario: each already mirrored (skipped). */
const pageDids = testDids('replaypage', 101);
for (const did of pageDids) script[did] = [{ did, kind: 'skipped', rev: '3l4bmq3xq2k2f' }];
const tries = new Map<string, number>();

async function attempt(did: string): Promise<RepoOutcome> {
  const n = tries.get(did) ?? 0;
  tries.set(did, n + 1);
  const outcomes = script[did] ?? [{ did, kind: 'retry', resync: 'transport', error: 'stand-in: unscripted' }];
  return outcomes[Math.min(n, outcomes.length - 1)]!;
}

/** Saves one run's history as a fixture. */
async function save(name: string, scenario: string, handle: WorkflowHandle<Workflow>, runId?: string): Promise<RecordedHistory> {
  const h = runId ? client.workflow.getHandle(handle.workflowId, runId) : handle;
  const desc = await h.describe();
  expect(desc.status.name, `${name} should have closed`).not.toBe('RUNNING');
  const history = historyToObject(await h.fetchHistory());
  const recorded: RecordedHistory = { scenario, workflowType: desc.type, workflowId: handle.workflowId, runId: desc.runId, history };
  await writeFile(join(HISTORIES_DIR, `${name}.json`), `${JSON.stringify(recorded)}\n`);
  return recorded;
}

const FAST_BACKOFF = { initialSeconds: 1, maxSeconds: 2, jitter: 0 };
const SLOW_BACKOFF = { initialSeconds: 600, maxSeconds: 3600, jitter: 0 };

describe.skipIf(!RECORD)('record workflow histories for the replay tests', () => {
  beforeAll(async () => {
    await mkdir(HISTORIES_DIR, { recursive: true });
    pool = openPool(await freshDatabase('replay'));
    await migrate(pool);
    dir = await mkdtemp(join(tmpdir(), 'repowalk-replay-'));
    const blobs = new LocalBlobStore(dir);
    await buildMirror({ pool, blobs }, mirror.map((did, i) => ({ did, records: 20 + 10 * i })));
    client = new Client({ connection: await Connection.connect({ address: testStack().temporal.address }) });
    workers = await startTestWorkers({ address: testStack().temporal.address, prefix, stores: { pool, blobs, healQueue: new PgHealQueue(pool) }, attempt, manyDelayMs: 300 });
  }, 180_000);

  afterAll(async () => {
    await workers?.stop();
    await client?.connection.close();
    await pool?.end();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('backfillRepo: backoff, pause and resume in backoff, resync-now, then done', async () => {
    const handle = await client.workflow.start(backfillRepo, {
      taskQueue: workers.queues.backfill,
      workflowId: `backfill/${flaky}`,
      args: [{ did: flaky, settings: { backoff: SLOW_BACKOFF } }],
    });
    const state = () => handle.query(backfillRepoStateQuery);
    await waitFor('first backoff', async () => (await state()).state === 'backoff');
    await handle.signal(pauseSignal);
    await waitFor('paused', async () => (await state()).state === 'paused');
    await handle.signal(resumeSignal);
    await waitFor('back in backoff', async () => (await state()).state === 'backoff');
    await handle.signal(resyncNowSignal);
    await waitFor('second backoff', async () => (await state()).retryCount === 2 && (await state()).state === 'backoff');
    await handle.signal(resyncNowSignal);
    expect((await handle.result()).state).toBe('done');
    await save('backfill-repo-backoff-pause-resume', 'two failed attempts, each a backoff timer; pause and resume while in backoff; resyncNow twice; done', handle);
  });

  it('backfillRepo: cancelled while in backoff', async () => {
    const handle = await client.workflow.start(backfillRepo, {
      taskQueue: workers.queues.backfill,
      workflowId: `backfill/${cancelled}`,
      args: [{ did: cancelled, settings: { backoff: SLOW_BACKOFF } }],
    });
    await waitFor('backoff', async () => (await handle.query(backfillRepoStateQuery)).state === 'backoff');
    await handle.signal(cancelSignal);
    expect((await handle.result()).state).toBe('cancelled');
    await save('backfill-repo-cancel', 'one failed attempt, cancelled during its backoff', handle);
  });

  it('backfill (bulk): pages of DIDs, every outcome, a hand-over to backfillRepo, pause and resume', async () => {
    const handle = await client.workflow.start(backfill, {
      taskQueue: workers.queues.backfill,
      workflowId: `${prefix}-bulk`,
      args: [{ source: { kind: 'dids', dids: [imported, skipped, handedOver, gone, dropped] }, pageSize: 2, concurrency: 2, settings: { backoff: FAST_BACKOFF } }],
    });
    await handle.signal(pauseSignal);
    await waitFor('paused', async () => (await handle.query(backfillProgressQuery)).state === 'paused');
    await handle.signal(resumeSignal);
    const result = await handle.result();
    expect(result).toMatchObject({ state: 'done', handedOver: 1, totals: { repos: 5, imported: 1, skipped: 1, failed: 1, gone: 1, dropped: 1 } });
    const child = client.workflow.getHandle<typeof backfillRepo>(`backfill/${handedOver}`);
    expect((await child.result()).state).toBe('done');
    await save('backfill-bulk', 'three pages of DIDs with every outcome; one repo handed over to backfillRepo; paused and resumed', handle);
    await save('backfill-repo-handed-over', 'started by a bulk backfill with its failed first outcome; one backoff; done', child);
  });

  it('backfill (bulk): the default page size', async () => {
    // 101 DIDs and no pageSize: one page under today's default (1,000), two under the old one (100).
    const dids = pageDids;
    const handle = await client.workflow.start(backfill, {
      taskQueue: workers.queues.backfill,
      workflowId: `${prefix}-bulk-default-page`,
      args: [{ source: { kind: 'dids', dids }, concurrency: 8, settings: { backoff: FAST_BACKOFF } }],
    });
    const result = await handle.result();
    expect(result).toMatchObject({ state: 'done', handedOver: 0, totals: { repos: 101, skipped: 101 } });
    await save('backfill-bulk-default-page-size', '101 DIDs, no pageSize given: the default page size decides the pages', handle);
  });

  it('backfill (bulk): two pages in flight by default', async () => {
    // Five DIDs in pages of two and no pagesInFlight: the second page is scheduled before the
    // first completes (today's default, 2); under the old default (1), one page at a time.
    const handle = await client.workflow.start(backfill, {
      taskQueue: workers.queues.backfill,
      workflowId: `${prefix}-bulk-default-pages-in-flight`,
      args: [{ source: { kind: 'dids', dids: pageDids.slice(0, 5) }, pageSize: 2, concurrency: 2, settings: { backoff: FAST_BACKOFF } }],
    });
    const result = await handle.result();
    expect(result).toMatchObject({ state: 'done', handedOver: 0, totals: { repos: 5, skipped: 5 } });
    await save('backfill-bulk-default-pages-in-flight', '5 DIDs in pages of 2, no pagesInFlight given: the default pages in flight decides how many run at once', handle);
  });

  it('walk: a pass over two slices, a tail pass by continue-as-new, pause and resume while tailing, cancel', async () => {
    const handle = await client.workflow.start(walk, {
      taskQueue: workers.queues.walk,
      workflowId: `${prefix}-walk`,
      args: [{ type: 'validate', slices: 2, pageSize: 1, tailIntervalSeconds: 2, heartbeatSeconds: 5 }],
    });
    const firstRun = handle.firstExecutionRunId;
    await waitFor('the tail pass', async () => (await handle.query(walkProgressQuery)).pass === 1, 60_000);
    await pool.query('UPDATE repos SET updated_at = now() WHERE did = $1', [mirror[0]]);
    await waitFor('tailing in the tail pass', async () => (await handle.query(walkProgressQuery)).state === 'tailing', 60_000);
    await handle.signal(pauseSignal);
    await waitFor('paused', async () => (await handle.query(walkProgressQuery)).state === 'paused');
    await handle.signal(resumeSignal);
    await handle.signal(cancelSignal);
    const result = await handle.result();
    expect(result.state).toBe('cancelled');
    const first = await save('walk-first-pass', 'a validate walk of two slices (pages of one repo), tailing, then continue-as-new', handle, firstRun);
    expect(first.history.events.at(-1)?.eventType).toBe('EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW');
    await save('walk-tail-pass', 'the tail pass: the changed repo walked again, then paused and resumed while tailing, then cancelled', handle);
    await save('walk-slice', 'one slice of the first pass: a page per repo', client.workflow.getHandle(`${prefix}-walk/slice-0`));
  });

  it('maintenance: a resync sweep that starts a backfillRepo, and a rotating walk', async () => {
    await markResync(pool, due, { kind: 'transport', count: 1, nextRetryAt: new Date(Date.now() - 60_000), error: 'reset' });
    const sweep = await client.workflow.start(resyncSweep, {
      taskQueue: workers.queues.maintenance,
      workflowId: `${prefix}-resync-sweep`,
      args: [{ backfillTaskQueue: workers.queues.backfill, settings: { backoff: FAST_BACKOFF } }],
    });
    expect(await sweep.result()).toMatchObject({ state: 'done', started: 1 });
    await save('resync-sweep', 'one due repo: a backfillRepo started as an abandoned child', sweep);
    const rotating = await client.workflow.start(rotatingWalk, {
      taskQueue: workers.queues.maintenance,
      workflowId: `${prefix}-rotating`,
      args: [{ type: 'scrub', rate: 2, walkTaskQueue: workers.queues.walk, walk: { slices: 1 } }],
    });
    expect((await rotating.result()).walk.state).toBe('done');
    await save('rotating-walk', 'claim an offset, walk that sample as a child, advance the offset', rotating);
  });
});
