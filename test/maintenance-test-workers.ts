/**
 * In-process workers for the maintenance and schedule tests (workflows/maintenance.test.ts,
 * schedules/schedules.test.ts): the maintenance workflows and activities on the maintenance
 * queue, the walk workflows and activities on the walk queue, and `backfillRepo` and `backfill`
 * on the backfill queue with stand-in activities (the tests decide what an attempt at a repo
 * comes to). Not used
 * in production (`repowalk worker` is).
 */
import { NativeConnection, Worker, Runtime, DefaultLogger } from '@temporalio/worker';
import type { Stores } from '../activities/context.ts';
import type { RepoOutcome } from '../backfill/settings.ts';
import { maintenanceActivities, type RecheckGoneInput } from '../activities/maintenance.ts';
import { recheckGone } from '../maintenance/gone-check.ts';
import type { RepoStatus } from '../atproto/net/index.ts';
import { loadConfig } from '../config/load.ts';
import { tmpdir } from 'node:os';
import { walkActivities } from '../activities/walk.ts';
import { workflowBundleCode } from './workflow-bundle.ts';

export interface TestWorkers {
  queues: { maintenance: string; backfill: string; walk: string };
  /** DIDs `backfillRepoOnce` was called for, in order. */
  attempts: string[];
  stop(): Promise<void>;
}

export interface TestWorkerOptions {
  address: string;
  /** Task queue prefix: queues are `<prefix>-maintenance`, `<prefix>-backfill`, `<prefix>-walk`. */
  prefix: string;
  stores: Pick<Stores, 'pool' | 'blobs' | 'healQueue'>;
  /** What an attempt at a repo comes to. Default: a transport failure, so `backfillRepo` waits in backoff. */
  attempt?: (did: string) => Promise<RepoOutcome>;
  /** What the gone re-check's getRepoStatus answers for a repo. Default: active again. */
  repoStatus?: (did: string) => Promise<RepoStatus>;
  /** How long each `backfillMany` (a bulk backfill's page) takes, so a test can signal during one. */
  manyDelayMs?: number;
}

let runtime = false;

export async function startTestWorkers(opts: TestWorkerOptions): Promise<TestWorkers> {
  if (!runtime) {
    runtime = true;
    Runtime.install({ logger: new DefaultLogger('WARN') });
  }
  const code = await workflowBundleCode();

  const queues = { maintenance: `${opts.prefix}-maintenance`, backfill: `${opts.prefix}-backfill`, walk: `${opts.prefix}-walk` };
  const attempts: string[] = [];
  const attempt = opts.attempt ?? (async (did: string): Promise<RepoOutcome> => ({ did, kind: 'retry', resync: 'transport', error: 'stand-in: no PDS in this test' }));
  const stores = { ...opts.stores, close: async () => {} };
  const connection = await NativeConnection.connect({ address: opts.address });
  const make = (taskQueue: string, activities: object) => Worker.create({ connection, taskQueue, workflowBundle: { code }, activities, shutdownGraceTime: '2 seconds' });
  const workers = await Promise.all([
    make(queues.maintenance, {
      ...maintenanceActivities({ stores, config: loadConfig({ env: {}, cwd: tmpdir() }) }),
      // No PDS here: the test says what getRepoStatus answers.
      recheckGone: (q: RecheckGoneInput) =>
        recheckGone({ pool: stores.pool, recheckSeconds: q.recheckSeconds, repoStatus: opts.repoStatus ?? (async (did) => ({ did, active: true })) }, q.dids),
    }),
    make(queues.walk, walkActivities({ stores })),
    make(queues.backfill, {
      async backfillRepoOnce(did: string): Promise<RepoOutcome> {
        attempts.push(did);
        return attempt(did);
      },
      async backfillMany(dids: string[]): Promise<RepoOutcome[]> {
        await new Promise((r) => setTimeout(r, opts.manyDelayMs ?? 0));
        attempts.push(...dids);
        return Promise.all(dids.map((did) => attempt(did)));
      },
      async recordResync(): Promise<void> {},
    }),
  ]);
  const running = Promise.all(workers.map((w) => w.run()));
  return {
    queues,
    attempts,
    async stop() {
      for (const w of workers) w.shutdown();
      await running;
      await connection.close();
    },
  };
}
